"""The server's SQLite database (WAL mode), one connection per request: the chain (§7),
the key repository and its indexes (§5, §6), KeyInits (§9) and tokens (§10).

Writers take the database lock up front (``BEGIN IMMEDIATE`` in
``transaction``), so every write is one serialized transaction: the chain
append, the index updates and the token spend commit together or not at all,
and uniqueness is enforced by constraints rather than by checking first.

Requests write through ``write``, which group-commits: a durable commit costs
an fsync (milliseconds), so concurrent writes of one process share a COMMIT,
each inside its own savepoint so that one request's failure undoes only its
own writes. No answer leaves before its COMMIT.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import urllib.parse
from concurrent.futures import Future
from typing import Callable, Iterator, TypeVar

import sqlite_utils
from flask import Flask, current_app, g

from .files import keep_private

SCHEMA_VERSION = 1

SCHEMA = """
-- The public hashchain (§7): dense positions from 0, append time for §7.4.
-- hash (= H[pos], the entry's first 32 bytes) finds the entry a lastentry names.
CREATE TABLE IF NOT EXISTS chain (
    pos INTEGER PRIMARY KEY,
    entry BLOB NOT NULL,
    hash BLOB NOT NULL UNIQUE,
    nonce BLOB NOT NULL UNIQUE,
    ts INTEGER NOT NULL
);
-- The key repository (§5): UIDMessageReply parts, one per chain entry.
CREATE TABLE IF NOT EXISTS uids (
    pos INTEGER PRIMARY KEY REFERENCES chain(pos),
    uid_index BLOB NOT NULL UNIQUE,
    encrypted BLOB NOT NULL,
    ts INTEGER NOT NULL,
    signatures TEXT NOT NULL
);
-- Private indexes (§6): identity -> what the rules need of its latest
-- UIDMessage, and its history (seq 0 = first UIDMessage) as chain positions.
CREATE TABLE IF NOT EXISTS identities (
    identity TEXT PRIMARY KEY,
    msgcount INTEGER NOT NULL,
    sigkey BLOB NOT NULL,
    sigescrow BLOB,
    not_before_ts INTEGER NOT NULL,
    not_after_ts INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    history_len INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    identity TEXT NOT NULL,
    seq INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    PRIMARY KEY (identity, seq)
) WITHOUT ROWID;
-- Payment tokens (§10): token keys (private parts in <instance>/token_keys/),
-- spent tokens by SHA256(token_input), vouchers by SHA256(code).
CREATE TABLE IF NOT EXISTS token_keys (
    key_id BLOB PRIMARY KEY,
    spki BLOB NOT NULL,
    created_ts INTEGER NOT NULL,
    not_after_ts INTEGER NOT NULL,
    filename TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS spent_tokens (
    spend_id BLOB PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vouchers (
    code_hash BLOB PRIMARY KEY,
    label TEXT NOT NULL UNIQUE,
    tokens INTEGER NOT NULL,
    remaining INTEGER NOT NULL CHECK (remaining >= 0),
    created_ts INTEGER NOT NULL,
    expires_ts INTEGER
);
-- sigkey/sigescrow hash -> identity: a key belongs to one identity only (§4).
CREATE TABLE IF NOT EXISTS keyhashes (
    keyhash BLOB PRIMARY KEY,
    identity TEXT NOT NULL
) WITHOUT ROWID;
-- The KeyInit repository (§9): each KeyInit as uploaded (canonical JSON), with the
-- columns the fetch choice and the purge need.
CREATE TABLE IF NOT EXISTS keyinits (
    id INTEGER PRIMARY KEY,
    sigkeyhash BLOB NOT NULL,
    msgcount INTEGER NOT NULL,
    not_before_ts INTEGER NOT NULL,
    not_after_ts INTEGER NOT NULL,
    fallback INTEGER NOT NULL,
    keyinit TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS keyinits_by_expiry ON keyinits (sigkeyhash, not_after_ts);
-- Per sigkeyhash, kept forever: the largest msgcount ever accepted (no replay of a
-- consumed KeyInit), the last accepted flush (no replay of a flush), the sigkey.
CREATE TABLE IF NOT EXISTS keyinit_state (
    sigkeyhash BLOB PRIMARY KEY,
    sigkey BLOB NOT NULL,
    max_msgcount INTEGER NOT NULL,
    last_flush_ts INTEGER
) WITHOUT ROWID;
-- KeyInit fetches of the last minute, for the fetch rate limits (§9) that every
-- worker process shares: scope 'address' (the client's) or 'sigkeyhash'. Fetches
-- leave once out of the window, so it holds at most a minute of them.
CREATE TABLE IF NOT EXISTS keyinit_fetches (
    scope TEXT NOT NULL,
    key NOT NULL,
    ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS keyinit_fetches_by_key ON keyinit_fetches (scope, key, ts);
CREATE INDEX IF NOT EXISTS keyinit_fetches_by_ts ON keyinit_fetches (ts);
CREATE TABLE IF NOT EXISTS signing_keys (
    key_id TEXT PRIMARY KEY,
    pubkey BLOB NOT NULL UNIQUE,
    created_ts INTEGER NOT NULL,
    expired_ts INTEGER
);
CREATE TABLE IF NOT EXISTS own_messages (
    pos INTEGER PRIMARY KEY,
    message TEXT NOT NULL
);
-- The notary's cache (§11.4), one row per origin, shared by every worker: the last
-- key document the origin served that its own keys signed (NULL until one did), when
-- it was fetched, what the freshness rules need of it, and when the origin was last
-- asked (the refetch limit). key_ids: its current and old key ids, space-separated.
CREATE TABLE IF NOT EXISTS notary_documents (
    server_name TEXT PRIMARY KEY,
    document TEXT,
    fetched_ts INTEGER,
    valid_until_ts INTEGER,
    key_ids TEXT,
    last_attempt_ts INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;
"""


def database_path(app: Flask) -> str:
    return os.path.join(app.instance_path, app.config["DATABASE"])


class Database(sqlite_utils.Database):
    """A connection plus its own handle on the writers' lock file.

    SQLite makes a waiting writer poll with growing sleeps (1, 2, 5, 10 ms ...),
    which wastes most of the time under contention between worker processes.
    Writers first queue on ``flock`` of ``<database>.lock`` instead, which wakes
    the next one as soon as the lock is free; SQLite's own lock then never waits.
    """

    def __init__(self, conn: sqlite3.Connection, lock_path: str):
        super().__init__(conn)
        self.lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)

    def close(self) -> None:
        os.close(self.lock_fd)
        self.conn.close()


def connect(path: str, synchronous: str = "FULL", create: bool = True) -> Database:
    """Open the database in autocommit mode; ``transaction`` brackets writes.

    Without ``create`` a missing database is an error: a server pointed at a folder
    that holds no instance must not leave an empty database there, which would then
    make ``keyserver init`` refuse the folder."""
    target = path if create else f"file:{urllib.parse.quote(path)}?mode=rw"
    conn = sqlite3.connect(target, isolation_level=None, timeout=30.0,
                           check_same_thread=False, uri=not create)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    database = Database(conn, f"{path}.lock")
    # The database holds the private indexes, voucher hashes and spent tokens. SQLite
    # gives a new WAL or SHM file the database file's mode, so a private database
    # keeps its side files private too; an instance made with looser modes is
    # tightened here.
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}.lock"):
        keep_private(name)
    return database


class ConnectionPool:
    """Idle connections of one process, reused across requests.

    Opening and closing a connection per request is slow in WAL mode: closing
    the last connection checkpoints and deletes the WAL file."""

    def __init__(self, path: str, synchronous: str, size: int = 32):
        self.path, self.synchronous, self.size = path, synchronous, size
        self._idle: list[Database] = []
        self._lock = threading.Lock()

    def acquire(self) -> Database:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return connect(self.path, self.synchronous, create=False)

    def release(self, db: Database) -> None:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(db)
                return
        db.close()


def _pool() -> ConnectionPool:
    pool = current_app.extensions.get("keyserver.db_pool")
    if pool is None:
        path, synchronous = database_path(current_app), current_app.config["SQLITE_SYNCHRONOUS"]
        with contextlib.closing(connect(path, synchronous, create=False)) as db:
            upgrade_db(db)
        pool = current_app.extensions.setdefault("keyserver.db_pool",
                                                 ConnectionPool(path, synchronous))
    return pool


class DataVersion:
    """A cheap signal that the database may have changed: ``PRAGMA data_version`` of a
    connection of this process's own that never writes. It changes whenever any other
    connection (another request's, another worker's, a CLI command's) commits, and
    costs a few microseconds where a query through the pool costs tens. A process keeps
    what it read (the signing-key windows, the notary's cache rows) for as long as it
    stays the same. Read it *before* reading what it guards: a commit in between
    then only makes the next reader read again.

    Per process (reopened after a fork), shared by its threads under a lock."""

    def __init__(self, path: str):
        self.path = path
        self._pid: int | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def read(self) -> int:
        with self._lock:
            if self._pid != os.getpid():
                self._conn = sqlite3.connect(self.path, isolation_level=None,
                                             check_same_thread=False)
                self._pid = os.getpid()
            assert self._conn is not None
            return self._conn.execute("PRAGMA data_version").fetchone()[0]


def data_version() -> int:
    """This app's ``DataVersion`` as the request first read it (see there): read once
    per request, since it costs a statement."""
    if "data_version" in g:
        return g.data_version
    signal = current_app.extensions.get("keyserver.data_version")
    if signal is None:
        _pool()                          # the database exists and is upgraded
        signal = current_app.extensions.setdefault("keyserver.data_version",
                                                   DataVersion(database_path(current_app)))
    g.data_version = signal.read()
    return g.data_version


def get_db() -> Database:
    if "db" not in g:
        g.db = _pool().acquire()
    return g.db


def close_db(exc: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        _pool().release(db)


@contextlib.contextmanager
def transaction(db: Database) -> Iterator[Database]:
    """One write transaction holding the write lock from its start (no upgrade races)."""
    fcntl.flock(db.lock_fd, fcntl.LOCK_EX)
    try:
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.conn.execute("COMMIT")
        except BaseException:
            # Also after a failed COMMIT (e.g. a deferred constraint), which leaves
            # the transaction open and the write lock held.
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise
    finally:
        fcntl.flock(db.lock_fd, fcntl.LOCK_UN)


T = TypeVar("T")
Job = Callable[[Database], T]


class GroupCommit:
    """Leader/follower group commit for the writes of one process.

    A writer queues its job, then waits for the leader lock. Whoever holds it runs
    every queued job in one transaction, a savepoint each, and commits once; a
    writer whose job a previous leader already ran just collects its result.
    """

    def __init__(self) -> None:
        self._leader = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[tuple[Job, Future]] = []

    def run(self, db: Database, job: Job[T]) -> T:
        future: Future = Future()
        with self._queue_lock:
            self._queue.append((job, future))
        with self._leader:
            if not future.done():
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._run_batch(db, batch)
        return future.result()

    @staticmethod
    def _run_batch(db: Database, batch: list[tuple[Job, Future]]) -> None:
        # A savepoint per job lets one job fail without undoing the others. A lone
        # job (always, under sync workers) needs none: its failure aborts the whole
        # transaction, which the handler below reports to it.
        savepoints = len(batch) > 1
        outcomes: list[tuple[Future, object, BaseException | None]] = []
        try:
            with transaction(db):
                for job, future in batch:
                    if not savepoints:
                        outcomes.append((future, job(db), None))
                        continue
                    db.conn.execute("SAVEPOINT job")
                    try:
                        result = job(db)
                    except Exception as exc:
                        db.conn.execute("ROLLBACK TO job")
                        outcomes.append((future, None, exc))
                    else:
                        outcomes.append((future, result, None))
                    db.conn.execute("RELEASE job")
        except BaseException as exc:
            # Nothing of the batch committed: every writer in it sees the failure.
            for _, future in batch:
                future.set_exception(exc)
            return
        for future, result, error in outcomes:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)


def write(job: Job[T]) -> T:
    """Run ``job(db)`` as one atomic write of the current request, group-committed."""
    committer = current_app.extensions.setdefault("keyserver.group_commit", GroupCommit())
    return committer.run(get_db(), job)


def init_db(db: Database) -> None:
    with transaction(db):
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.conn.execute(statement)
        db.conn.execute("INSERT OR IGNORE INTO state (key, value) VALUES ('schema_version', ?)",
                        (SCHEMA_VERSION,))


def upgrade_db(db: Database) -> None:
    """Add the tables made since an instance was created (every statement of the schema
    is idempotent); run once per process. A database that holds no instance is left
    as it is, so that it fails as such rather than becoming an empty one."""
    if db.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'chain'").fetchone():
        init_db(db)


def get_state(db: Database, key: str, default=None):
    row = db.conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    return default if row is None else row[0]


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_db)


def count(db: Database, key: str, amount: int) -> None:
    """Add ``amount`` to the counter ``key`` in ``state`` (operator statistics)."""
    db.conn.execute("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key)"
                    " DO UPDATE SET value = value + excluded.value", (key, amount))

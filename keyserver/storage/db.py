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

Every wait is bounded (``wait_s``, the configuration's ``REQUEST_WAIT_BOUND``): the
write lock, SQLite's busy handler and a process's queue of writers each give up by
the write's deadline with ``StorageUnavailable`` (503 with ``Retry-After``), so a
request is answered well before a worker timeout kills it. A full disk or an I/O
error at any step of a write is ``StorageUnavailable`` too: the transaction is
rolled back (nothing half-written), the fault is logged once per episode, and a
write that failed for space checkpoints the WAL, so that freeing space recovers
the server without a restart. Readers (WAL) never take the write lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import sqlite3
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import Future
from typing import Callable, Iterator, TypeVar

import sqlite_utils
from flask import Flask, current_app, g

from client.protocol.errors import Unavailable

from .files import keep_private

log = logging.getLogger("keyserver.storage")

#: Seconds a client is asked to wait after a busy database, and after a full disk or
#: an I/O error (the operator has to act: clients report it rather than retry).
BUSY_RETRY_S = 1
FAULT_RETRY_S = 60
#: The WAL is truncated to this size when a checkpoint resets it (SQLite leaves it at
#: its largest otherwise); with SQLite's automatic checkpoint every 1,000 pages it
#: stays near 4 MiB between checkpoints, well below the ``MIN_FREE_BYTES`` reserve.
WAL_SIZE_LIMIT = 4 * 1024 * 1024
WAL_AUTOCHECKPOINT_PAGES = 1000
#: SQLite's primary result codes by what they mean to a client: try again shortly
#: (BUSY, LOCKED), the disk is full (FULL), the storage failed (IOERR, READONLY,
#: PROTOCOL). A database that cannot be opened (CANTOPEN: no instance there) is not
#: a passing fault but a broken setup: 500.
_SQLITE_KINDS = {5: "busy", 6: "busy", 13: "space", 10: "io", 8: "io", 15: "io"}
_OS_KINDS = {errno.ENOSPC: "space", errno.EDQUOT: "space", errno.EIO: "io", errno.EROFS: "io"}

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
-- A revoked voucher pays nothing more (its row in vouchers stays for the records).
CREATE TABLE IF NOT EXISTS revoked_vouchers (
    code_hash BLOB PRIMARY KEY REFERENCES vouchers (code_hash),
    revoked_ts INTEGER NOT NULL
) WITHOUT ROWID;
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
CREATE TABLE IF NOT EXISTS tree_nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    tree_size INTEGER PRIMARY KEY,
    note TEXT NOT NULL,
    created_ts INTEGER NOT NULL
);
-- Witnesses' cosignatures of the checkpoints (§8.1), served appended to the note:
-- one per checkpoint and witness, the signature line as the witness gave it (with its
-- newline), and its timestamp (seconds, as cosignature/v1 carries it).
CREATE TABLE IF NOT EXISTS cosignatures (
    tree_size INTEGER NOT NULL REFERENCES checkpoints(tree_size),
    witness TEXT NOT NULL,
    line TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (tree_size, witness)
) WITHOUT ROWID;
-- Per configured witness, what the log knows of it: the size it last cosigned (or said
-- it holds, in a 409), its last success, the failures in a row and the last one's
-- error, and when it may be asked next (the backoff, and the claim that keeps two
-- workers from asking it at once).
CREATE TABLE IF NOT EXISTS witness_state (
    witness TEXT PRIMARY KEY,
    cosigned_size INTEGER NOT NULL DEFAULT 0,
    last_success_ts INTEGER,
    failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_ts INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
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
-- The witness (§8.1): per log it follows, the checkpoint it cosigned last (whose size
-- the next add-checkpoint's "old" must name), replaced in the transaction that checks
-- "old", and evidence: requests the log signed that contradict it (a consistency proof
-- that fails, another root for the size it holds), as received.
CREATE TABLE IF NOT EXISTS witnessed_logs (
    origin TEXT PRIMARY KEY,
    tree_size INTEGER NOT NULL,
    root_hash BLOB NOT NULL,
    note TEXT NOT NULL,
    updated_ts INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS witness_evidence (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    received_ts INTEGER NOT NULL,
    request BLOB NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;
"""


def database_path(app: Flask) -> str:
    return os.path.join(app.instance_path, app.config["DATABASE"])


class StorageUnavailable(Unavailable):
    """A write that storage could not take now, and of which nothing was kept:
    ``kind`` is ``busy`` (the write lock or the database stayed taken until the
    deadline), ``space`` (the disk is full, or below the free-space reserve) or
    ``io`` (an I/O error). 503 ``UNAVAILABLE`` with ``Retry-After: retry_after_s``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = BUSY_RETRY_S if kind == "busy" else FAULT_RETRY_S


def fault_kind(exc: BaseException) -> str | None:
    """``busy``, ``space`` or ``io`` for an exception that says storage is unavailable
    (SQLite's result code, or the errno of a file operation); None for any other."""
    if isinstance(exc, StorageUnavailable):
        return exc.kind
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return _SQLITE_KINDS.get(code & 0xFF)
        text = str(exc)
        if "locked" in text or "busy" in text:
            return "busy"
        return "space" if "is full" in text else None
    if isinstance(exc, OSError):
        return _OS_KINDS.get(exc.errno)
    return None


def unavailable(exc: BaseException) -> StorageUnavailable | None:
    """``exc`` as a ``StorageUnavailable`` (logged once per episode), or None when it
    is not a storage fault."""
    if isinstance(exc, StorageUnavailable):
        return exc
    kind = fault_kind(exc)
    if kind is None:
        return None
    episodes.failed(kind, str(exc))
    message = {"busy": "the database is busy, retry shortly",
               "space": "the server's disk is full, retry later",
               "io": "the server's storage failed, retry later"}[kind]
    return StorageUnavailable(kind, message)


class FaultEpisodes:
    """Logs a storage fault once per episode and process, not once per request: the
    first failure of a kind, then one line when a write succeeds again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current: str | None = None
        self.failures = 0

    def failed(self, kind: str, detail: str) -> None:
        with self._lock:
            self.failures += 1
            if kind == self.current:
                return
            self.current = kind
        log.warning("storage_fault kind=%s detail=%r (logged once until a write succeeds)",
                    kind, detail)

    def succeeded(self) -> None:
        if self.current is None:   # the common case costs one attribute read
            return
        with self._lock:
            kind, failures, self.current, self.failures = self.current, self.failures, None, 0
        if kind is not None:
            log.warning("storage_recovered kind=%s failed_writes=%d", kind, failures)


#: This process's episodes (one database per server process).
episodes = FaultEpisodes()


class WriteLock:
    """The writers' lock of one database in this process: a thread lock among its
    threads, then ``flock`` of ``<database>.lock`` among processes, each waited for
    until a deadline at most.

    SQLite makes a waiting writer poll with growing sleeps (1, 2, 5, 10 ms ...),
    which wastes most of the time under contention between worker processes;
    ``flock`` wakes the next writer as soon as the lock is free. It has no timeout,
    so a contended lock is waited for by a helper thread (at most one per process,
    taken over by the next writer when a writer gave up) while the writer waits for
    it with one; a lock the helper gets when nobody waits any more is let go.
    """

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._threads = threading.Lock()
        self._state = threading.Lock()
        self._granted = threading.Event()
        self._helper: threading.Thread | None = None
        self._wanted = False

    def acquire(self, timeout: float) -> bool:
        """Take the lock within ``timeout`` seconds; False if it stayed taken."""
        deadline = time.monotonic() + timeout
        if not self._threads.acquire(timeout=max(0.0, timeout)):
            return False
        try:
            if self._flock(deadline):
                return True
        except BaseException:
            self._threads.release()
            raise
        self._threads.release()
        return False

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self._threads.release()

    def _flock(self, deadline: float) -> bool:
        with self._state:
            if self._helper is None:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    pass
                self._granted.clear()
                self._helper = threading.Thread(target=self._wait, daemon=True,
                                                name="keyserver-write-lock")
                self._helper.start()
            self._wanted = True
        self._granted.wait(max(0.0, deadline - time.monotonic()))
        with self._state:
            self._wanted = False
            if self._granted.is_set():
                self._granted.clear()
                return True
            return False

    def _wait(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        with self._state:
            self._helper = None
            if self._wanted:
                self._granted.set()
            else:
                fcntl.flock(self.fd, fcntl.LOCK_UN)


_write_locks: dict[tuple[int, str], WriteLock] = {}
_write_locks_guard = threading.Lock()


def write_lock(lock_path: str) -> WriteLock:
    """This process's ``WriteLock`` of ``lock_path`` (a forked child gets its own: an
    inherited descriptor would share its parent's lock)."""
    key = (os.getpid(), os.path.abspath(lock_path))
    with _write_locks_guard:
        lock = _write_locks.get(key)
        if lock is None:
            lock = _write_locks[key] = WriteLock(lock_path)
    return lock


class Database(sqlite_utils.Database):
    """A connection plus the process's lock of its writers, and how long a write may
    wait (``wait_s``). ``broken`` marks a connection that failed with an I/O error:
    the pool closes it rather than reusing it."""

    def __init__(self, conn: sqlite3.Connection, lock_path: str, wait_s: float):
        super().__init__(conn)
        self.write_lock = write_lock(lock_path)
        self.wait_s = wait_s
        self.broken = False

    def close(self) -> None:
        self.conn.close()


#: How long a write waits when the caller does not say (the default
#: ``REQUEST_WAIT_BOUND``).
DEFAULT_WAIT_S = 10.0


def connect(path: str, synchronous: str = "FULL", create: bool = True,
            wait_s: float = DEFAULT_WAIT_S) -> Database:
    """Open the database in autocommit mode; ``transaction`` brackets writes.

    Without ``create`` a missing database is an error: a server pointed at a folder
    that holds no instance must not leave an empty database there, which would then
    make ``keyserver init`` refuse the folder."""
    target = path if create else f"file:{urllib.parse.quote(path)}?mode=rw"
    conn = sqlite3.connect(target, isolation_level=None, timeout=wait_s,
                           check_same_thread=False, uri=not create)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    database = Database(conn, f"{path}.lock", wait_s)
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

    def __init__(self, path: str, synchronous: str, size: int = 32,
                 wait_s: float = DEFAULT_WAIT_S):
        self.path, self.synchronous, self.size, self.wait_s = path, synchronous, size, wait_s
        self._idle: list[Database] = []
        self._lock = threading.Lock()

    def acquire(self) -> Database:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return connect(self.path, self.synchronous, create=False, wait_s=self.wait_s)

    def release(self, db: Database) -> None:
        if db.conn.in_transaction:
            _rollback(db)
        with self._lock:
            if not db.broken and len(self._idle) < self.size:
                self._idle.append(db)
                return
        with contextlib.suppress(sqlite3.Error):
            db.close()


class DiskReserve:
    """The free-space reserve below which writes are refused (``MIN_FREE_BYTES``), so
    that the database never meets a full disk in the middle of a write; reads go on.

    ``os.statvfs`` of the database's folder, at most once every ``interval_s`` per
    process: a write costs a clock reading and a comparison."""

    def __init__(self, folder: str, min_free_bytes: int, interval_s: float):
        self.folder, self.min_free_bytes, self.interval_s = folder, min_free_bytes, interval_s
        self._checked = -float("inf")
        self._free = 0

    def free_bytes(self) -> int:
        """The bytes free for unprivileged writers, as measured at most ``interval_s`` ago."""
        now = time.monotonic()
        if now - self._checked >= self.interval_s:
            stat = os.statvfs(self.folder)
            self._free, self._checked = stat.f_bavail * stat.f_frsize, now
        return self._free

    def low(self) -> bool:
        return self.min_free_bytes > 0 and self.free_bytes() < self.min_free_bytes

    def has_room(self, size: int) -> bool:
        """Whether ``size`` bytes can be allocated in the folder now: a nameless file
        (gone when closed, whatever happens) given its blocks for real. Without a
        reserve this is the only way to see a full disk before a write meets it:
        ``BEGIN IMMEDIATE`` needs no space, and the bytes ``statvfs`` reports free
        are not the bytes a write can have (SQLite's ENOSPC comes with some left).
        Other I/O errors are raised."""
        try:
            with tempfile.TemporaryFile(dir=self.folder) as probe:
                os.posix_fallocate(probe.fileno(), 0, size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return False
            raise
        return True

    def check(self) -> None:
        """Refuse a write (``StorageUnavailable``, kind ``space``) below the reserve."""
        if self.low():
            episodes.failed("space", f"less than MIN_FREE_BYTES ({self.min_free_bytes})"
                                     f" free in {self.folder}")
            raise StorageUnavailable("space", "the server is low on disk space and takes no"
                                              " writes for now, retry later")


def _pool() -> ConnectionPool:
    pool = current_app.extensions.get("keyserver.db_pool")
    if pool is None:
        path, config = database_path(current_app), current_app.config
        wait_s = config["REQUEST_WAIT_BOUND"] / 1000
        with contextlib.closing(connect(path, config["SQLITE_SYNCHRONOUS"], create=False,
                                        wait_s=wait_s)) as db:
            upgrade_db(db)
        pool = current_app.extensions.setdefault("keyserver.db_pool", ConnectionPool(
            path, config["SQLITE_SYNCHRONOUS"], wait_s=wait_s))
    return pool


def disk_reserve() -> DiskReserve:
    """This app's free-space reserve."""
    reserve = current_app.extensions.get("keyserver.disk_reserve")
    if reserve is None:
        config = current_app.config
        reserve = current_app.extensions.setdefault("keyserver.disk_reserve", DiskReserve(
            os.path.dirname(database_path(current_app)), config["MIN_FREE_BYTES"],
            config["DISK_CHECK_INTERVAL"] / 1000))
    return reserve


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


def check_writable(db: Database, timeout_s: float) -> None:
    """Whether a write could start now: the write lock within ``timeout_s``, then
    SQLite's (``BEGIN IMMEDIATE``), rolled back at once. Raises ``StorageUnavailable``
    or SQLite's error. A probe: it neither logs nor ends a fault episode."""
    if not db.write_lock.acquire(timeout_s):
        raise StorageUnavailable("busy", "the write lock is taken")
    try:
        db.conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        try:
            db.conn.execute("BEGIN IMMEDIATE")
            db.conn.execute("ROLLBACK")
        finally:
            _rollback(db)
            with contextlib.suppress(sqlite3.Error):
                db.conn.execute(f"PRAGMA busy_timeout={int(db.wait_s * 1000)}")
    finally:
        db.write_lock.release()


def _rollback(db: Database) -> None:
    """Roll back, if SQLite did not already; a connection that cannot is not reused."""
    try:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
    except sqlite3.Error:
        db.broken = True


def _checkpoint(db: Database) -> None:
    """After a write failed for space: copy the WAL into the database and truncate it,
    which gives its space back once some is free again (without this, a WAL that
    grew until the disk filled stays at its size, and the server wedged)."""
    with contextlib.suppress(sqlite3.Error):
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@contextlib.contextmanager
def transaction(db: Database, deadline: float | None = None) -> Iterator[Database]:
    """One write transaction holding the write lock from its start (no upgrade races).

    Every wait ends by ``deadline`` (``time.monotonic()``; default ``db.wait_s`` from
    now): the lock, then SQLite's busy handler (for a writer outside our lock, e.g.
    the sqlite3 shell). A storage fault at any step rolls back and raises
    ``StorageUnavailable``; other exceptions roll back and pass through."""
    if deadline is None:
        deadline = time.monotonic() + db.wait_s
    if not db.write_lock.acquire(deadline - time.monotonic()):
        episodes.failed("busy", "the write lock stayed taken until the deadline")
        raise StorageUnavailable("busy", "the database is busy, retry shortly")
    try:
        left_ms = int((deadline - time.monotonic()) * 1000)
        waited = left_ms < db.wait_s * 1000 - 1
        try:
            if waited:
                db.conn.execute(f"PRAGMA busy_timeout={max(0, left_ms)}")
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.conn.execute("COMMIT")
            except BaseException as exc:
                # Also after a failed COMMIT (a full disk, a deferred constraint), which
                # may leave the transaction open and the write lock held.
                _rollback(db)
                kind = fault_kind(exc)
                if kind == "space":
                    _checkpoint(db)
                elif kind == "io":
                    db.broken = True
                raise
            finally:
                if waited:
                    with contextlib.suppress(sqlite3.Error):
                        db.conn.execute(f"PRAGMA busy_timeout={int(db.wait_s * 1000)}")
        except BaseException as exc:
            fault = unavailable(exc)
            if fault is None or fault is exc:
                raise
            raise fault from exc
    finally:
        db.write_lock.release()
    episodes.succeeded()


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

    def run(self, db: Database, job: Job[T], deadline: float | None = None) -> T:
        """Run ``job`` in a batch; give up by ``deadline`` (``StorageUnavailable``) if
        the batch it would join has not started by then."""
        if deadline is None:
            deadline = time.monotonic() + db.wait_s
        future: Future = Future()
        entry = (job, future)
        with self._queue_lock:
            self._queue.append(entry)
        if not self._leader.acquire(timeout=max(0.0, deadline - time.monotonic())):
            with self._queue_lock:
                queued = any(item is entry for item in self._queue)
                if queued:
                    self._queue = [item for item in self._queue if item is not entry]
            if queued:
                episodes.failed("busy", "the writers of this process stayed queued until"
                                        " the deadline")
                raise StorageUnavailable("busy", "the database is busy, retry shortly")
            # A leader took it: its batch ends by that leader's deadline.
            return future.result()
        try:
            if not future.done():
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._run_batch(db, batch, deadline)
        finally:
            self._leader.release()
        return future.result()

    @staticmethod
    def _run_batch(db: Database, batch: list[tuple[Job, Future]], deadline: float) -> None:
        # A savepoint per job lets one job fail without undoing the others. A lone
        # job (always, under sync workers) needs none: its failure aborts the whole
        # transaction, which the handler below reports to it.
        savepoints = len(batch) > 1
        outcomes: list[tuple[Future, object, BaseException | None]] = []
        try:
            with transaction(db, deadline):
                for job, future in batch:
                    if not savepoints:
                        outcomes.append((future, job(db), None))
                        continue
                    db.conn.execute("SAVEPOINT job")
                    try:
                        result = job(db)
                    except Exception as exc:
                        if fault_kind(exc) is not None or not db.conn.in_transaction:
                            # SQLite may have rolled back the whole transaction (a full
                            # disk, an I/O error): the batch fails as one.
                            raise
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


#: ``app.extensions`` key of a callable told each request write's outcome
#: (``committed``, ``refused``, or a ``StorageUnavailable`` kind): the metrics.
WRITE_OBSERVER = "keyserver.write_observer"


def write(job: Job[T]) -> T:
    """Run ``job(db)`` as one atomic write of the current request, group-committed;
    refused below the free-space reserve, and within ``REQUEST_WAIT_BOUND``."""
    observe = current_app.extensions.get(WRITE_OBSERVER)
    try:
        disk_reserve().check()
        db = get_db()
        committer = current_app.extensions.setdefault("keyserver.group_commit", GroupCommit())
        result = committer.run(db, job, time.monotonic() + db.wait_s)
    except Exception as exc:
        if observe is not None:
            kind = fault_kind(exc)
            observe(kind or "refused")
        raise
    if observe is not None:
        observe("committed")
    return result


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
    as it is, so that it fails as such rather than becoming an empty one. Only a
    database that lacks a table or index takes the write lock: a worker's first
    request, a read perhaps, must not wait for the writers."""
    present = {name for (name,) in db.conn.execute("SELECT name FROM sqlite_master")}
    if "chain" in present and not set(_SCHEMA_NAMES) <= present:
        init_db(db)


#: The tables and indexes ``SCHEMA`` makes.
_SCHEMA_NAMES = re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", SCHEMA)


def get_state(db: Database, key: str, default=None):
    row = db.conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    return default if row is None else row[0]


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_db)


def count(db: Database, key: str, amount: int) -> None:
    """Add ``amount`` to the counter ``key`` in ``state`` (operator statistics)."""
    db.conn.execute("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key)"
                    " DO UPDATE SET value = value + excluded.value", (key, amount))

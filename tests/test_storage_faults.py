"""Storage faults (issue 18): a full disk or an I/O error at commit, the free-space
reserve, a busy database and the bounded write lock. Every write refused for them is
503 UNAVAILABLE with Retry-After, writes nothing, is logged once per episode, and the
server recovers without a restart; reads go on meanwhile."""

import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
import threading
import time
from types import SimpleNamespace

import pytest

from conftest import UserActions, mint
from keyserver import create_app
from keyserver.storage import chain, db as storage
from keyserver.storage.db import WAL_SIZE_LIMIT, WriteLock, connect, init_db


def real_sqlite_error(kind: str) -> sqlite3.Error:
    """An error as SQLite itself raises it (result code included), not a look-alike."""
    conn = sqlite3.connect(":memory:")
    try:
        if kind == "full":
            conn.execute("PRAGMA max_page_count = 2")
            conn.execute("CREATE TABLE t (x)")
            conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
        raise AssertionError("no error")
    except sqlite3.OperationalError as exc:
        assert exc.sqlite_errorcode == 13
        return exc
    finally:
        conn.close()


class Disk:
    """The fault switch: while ``full``, every COMMIT fails as SQLite fails it on a full
    disk (before anything is written, so the transaction stays open, as it does)."""

    def __init__(self):
        self.full = False
        self.commits_refused = 0


class FaultyConnection:
    """A sqlite3 connection whose COMMIT fails while the disk is full."""

    def __init__(self, conn, disk):
        self._conn, self._disk = conn, disk

    def execute(self, sql, *args):
        if sql == "COMMIT" and self._disk.full:
            self._disk.commits_refused += 1
            raise real_sqlite_error("full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


@pytest.fixture
def disk(monkeypatch):
    disk = Disk()
    real = storage.connect

    def faulty(*args, **kwargs):
        database = real(*args, **kwargs)
        database.conn = FaultyConnection(database.conn, disk)
        return database

    monkeypatch.setattr(storage, "connect", faulty)
    return disk


def make_app(instance, **config):
    return create_app({"TESTING": True, **config}, instance_path=str(instance))


def chain_length(app) -> int:
    with app.app_context():
        return chain.verify_stored(storage.get_db())


def storage_lines(caplog, word):
    return [r for r in caplog.records if r.name == "keyserver.storage" and word in r.message]


def test_full_disk_at_commit_is_503_nothing_written_logged_once_and_recovers(
        instance, disk, caplog):
    app = make_app(instance)
    client = app.test_client()
    users = UserActions(client)
    users.register("before@example.org")
    length = chain_length(app)
    token = mint(app)
    message, _, _ = users.create_message("alice@example.org")
    disk.full = True
    caplog.set_level(logging.WARNING, "keyserver.storage")
    for _ in range(3):
        answer = users.put("alice@example.org", message, token=token)
        assert answer.status_code == 503, answer.json
        assert answer.json["errcode"] == "UNAVAILABLE"
        assert answer.headers["Retry-After"] == "60"
        # Reads go on.
        assert client.get("/v1/hashchain/head").status_code == 200
        assert client.get("/v1/hashchain?start=0").status_code == 200
    assert disk.commits_refused == 3
    assert len(storage_lines(caplog, "storage_fault kind=space")) == 1
    assert not [r for r in caplog.records if r.exc_info]   # no traceback per request
    # Nothing half-written: the chain verifies, no entry, no index, the token unspent.
    assert chain_length(app) == length
    with app.app_context():
        conn = storage.get_db().conn
        assert conn.execute("SELECT count(*) FROM identities WHERE identity = ?",
                            ("alice@example.org",)).fetchone()[0] == 0
    # The WAL was checkpointed and truncated when the write failed for space.
    assert os.path.getsize(instance / "keyserver.sqlite-wal") == 0
    disk.full = False   # the operator freed space: no restart
    answer = users.put("alice@example.org", message, token=token)
    assert answer.status_code == 201, answer.json
    assert chain_length(app) == length + 1
    assert len(storage_lines(caplog, "storage_recovered kind=space failed_writes=3")) == 1


def test_a_failed_commit_in_a_shared_batch_fails_every_writer(tmp_path, disk):
    """Group commit: when the shared COMMIT fails for space, no writer of the batch is
    told it succeeded, and none of them is kept."""
    path = str(tmp_path / "t.sqlite")
    init_db(connect(path))
    committer = storage.GroupCommit()
    started, outcomes = threading.Event(), {}

    def slow(database):
        started.set()
        time.sleep(0.2)
        database.conn.execute("INSERT INTO state VALUES ('k0', 0)")

    def run(name, job):
        try:
            outcomes[name] = committer.run(storage.connect(path), job)
        except Exception as exc:
            outcomes[name] = exc

    disk.full = True
    first = threading.Thread(target=run, args=("first", slow))
    first.start()
    started.wait()
    others = [threading.Thread(target=run, args=(f"k{n}", lambda database, n=n:
              database.conn.execute("INSERT INTO state VALUES (?, ?)", (f"k{n}", n))))
              for n in range(1, 4)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(10)
    assert all(isinstance(o, storage.StorageUnavailable) and o.kind == "space"
               for o in outcomes.values()), outcomes
    check = sqlite3.connect(path)
    assert check.execute("SELECT count(*) FROM state WHERE key LIKE 'k%'").fetchone()[0] == 0
    check.close()


class FakeStatvfs:
    """``os.statvfs`` of a disk with ``free`` bytes available (4 KiB blocks)."""

    def __init__(self, free):
        self.free, self.calls = free, 0

    def __call__(self, path):
        self.calls += 1
        return SimpleNamespace(f_bavail=self.free // 4096, f_frsize=4096)


def test_below_the_reserve_writes_are_refused_reads_go_on_and_freeing_space_recovers(
        instance, monkeypatch, caplog):
    statvfs = FakeStatvfs(10 * 2**20)
    monkeypatch.setattr(storage.os, "statvfs", statvfs)
    app = make_app(instance, MIN_FREE_BYTES=64 * 2**20, DISK_CHECK_INTERVAL=0)
    client = app.test_client()
    users = UserActions(client)
    token = mint(app)
    message, _, _ = users.create_message("alice@example.org")
    caplog.set_level(logging.WARNING, "keyserver.storage")
    length = chain_length(app)
    for _ in range(2):
        answer = users.put("alice@example.org", message, token=token)
        assert answer.status_code == 503 and answer.json["errcode"] == "UNAVAILABLE"
        assert answer.headers["Retry-After"] == "60"
        assert client.get("/v1/hashchain/head").status_code == 200
        assert client.get("/v1/capabilities").status_code == 200
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200
    assert len(storage_lines(caplog, "storage_fault kind=space")) == 1
    assert chain_length(app) == length
    statvfs.free = 65 * 2**20   # space freed
    assert client.get("/readyz").status_code == 200
    assert users.put("alice@example.org", message, token=token).status_code == 201


@pytest.mark.parametrize("error,disk", [(errno.ENOSPC, "disk full"), (errno.EDQUOT, "disk full"),
                                         (errno.EIO, "I/O error")])
def test_without_a_reserve_readyz_asks_the_disk_for_room(instance, monkeypatch, error, disk):
    """No reserve (``MIN_FREE_BYTES=0``): /readyz is not ready when the disk cannot
    give a write's room, before any write meets it; nothing of the probe stays."""
    app = make_app(instance, MIN_FREE_BYTES=0)
    client = app.test_client()
    assert client.get("/readyz").json["disk"] == "ok"
    before = sorted(os.listdir(instance))
    allocated = []

    def fallocate(fd, offset, length):
        allocated.append(length)
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(storage.os, "posix_fallocate", fallocate)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["disk"] == disk
    assert ready.json["database"] == ready.json["writes"] == "ok"
    assert allocated == [2**20]
    assert sorted(os.listdir(instance)) == before


def test_free_space_is_measured_at_most_once_per_interval(instance, monkeypatch):
    statvfs = FakeStatvfs(2**40)
    monkeypatch.setattr(storage.os, "statvfs", statvfs)
    app = make_app(instance, DISK_CHECK_INTERVAL=60_000)
    users = UserActions(app.test_client())
    for name in ("ann", "bob", "cyd"):
        users.register(f"{name}@example.org")
    assert statvfs.calls == 1


def test_a_reserve_larger_than_the_disk_refuses_writes_for_real(instance):
    """No fake: MIN_FREE_BYTES above what the file system has."""
    free = os.statvfs(instance).f_bavail * os.statvfs(instance).f_frsize
    app = make_app(instance, MIN_FREE_BYTES=free + 2**40)
    users = UserActions(app.test_client())
    message, _, _ = users.create_message("alice@example.org")
    answer = users.put("alice@example.org", message)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "60"
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503 and ready.json["disk"] != "ok"


def test_the_wal_is_bounded(tmp_path):
    database = connect(str(tmp_path / "t.sqlite"))
    assert database.conn.execute("PRAGMA journal_size_limit").fetchone()[0] == WAL_SIZE_LIMIT
    assert database.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] > 0


def hold_sqlite_lock(path):
    """A writer outside the server's lock (e.g. the sqlite3 shell): BEGIN IMMEDIATE."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_a_database_locked_outside_the_write_lock_is_503_within_the_bound(instance):
    app = make_app(instance, REQUEST_WAIT_BOUND=300)
    client = app.test_client()
    users = UserActions(client)
    token = mint(app)
    message, _, _ = users.create_message("alice@example.org")
    holder = hold_sqlite_lock(str(instance / "keyserver.sqlite"))
    try:
        started = time.monotonic()
        answer = users.put("alice@example.org", message, token=token)
        took = time.monotonic() - started
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
        assert 0.25 < took < 2.0
        assert client.get("/v1/hashchain/head").status_code == 200
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert users.put("alice@example.org", message, token=token).status_code == 201


@contextlib.contextmanager
def flocked(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield fd
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def test_write_lock_times_out_hands_over_and_lets_go(tmp_path):
    path = str(tmp_path / "x.lock")
    lock = WriteLock(path)
    with flocked(path):
        started = time.monotonic()
        assert not lock.acquire(0.2)
        assert 0.15 < time.monotonic() - started < 1.0
        # A second writer takes over the waiting helper rather than starting another.
        assert not lock.acquire(0.1)
        assert threading.active_count() <= 3
    # Released: the helper got the lock for nobody, so it let it go at once...
    deadline = time.monotonic() + 5
    other = os.open(path, os.O_RDWR)
    try:
        while True:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "the helper kept the lock"
                time.sleep(0.01)
        # ...and a writer waiting on it now gets it as soon as it is free.
        threading.Timer(0.2, fcntl.flock, (other, fcntl.LOCK_UN)).start()
        started = time.monotonic()
        assert lock.acquire(5)
        assert time.monotonic() - started < 2
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.release()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(other)


def test_threads_of_one_process_exclude_each_other(tmp_path):
    path = str(tmp_path / "x.lock")
    lock, inside, overlaps = WriteLock(path), [], []

    def work():
        for _ in range(50):
            assert lock.acquire(5)
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(1)
            inside.pop()
            lock.release()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not overlaps


def test_the_cli_reports_a_busy_database_in_one_line(instance):
    from click.testing import CliRunner

    from keyserver.cli import main

    with flocked(str(instance / "keyserver.sqlite.lock")):
        result = CliRunner(env={"KEYSERVER_REQUEST_WAIT_BOUND": "200"}).invoke(
            main, ["tokens", "mint", "-n", "1", "--instance", str(instance)])
    assert result.exit_code == 1
    assert "database: the database is busy" in result.output

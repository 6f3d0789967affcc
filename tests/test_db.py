"""Group commit (keyserver.db.GroupCommit): shared COMMITs, isolated failures."""

import threading
import time

import pytest

from client.errors import IdentityTaken
from keyserver.db import GroupCommit, connect, init_db


@pytest.fixture
def database(tmp_path):
    db = connect(str(tmp_path / "t.sqlite"))
    init_db(db)
    return db


def values(db):
    return sorted(row[0] for row in db.conn.execute(
        "SELECT key FROM state WHERE key LIKE 'k%'"))


def test_concurrent_jobs_share_batches_and_fail_alone(tmp_path, database):
    committer = GroupCommit()
    started = threading.Event()
    commits = []
    outcomes = {}

    def slow_first(db):
        started.set()
        time.sleep(0.3)  # everyone else queues meanwhile
        db.conn.execute("INSERT INTO state VALUES ('k0', 0)")
        return "first"

    def job(n):
        def insert(db):
            db.conn.execute("INSERT INTO state VALUES (?, ?)", (f"k{n}", n))
            if n % 3 == 0:
                raise IdentityTaken(f"job {n} refused")
            return n
        return insert

    def worker(n, fn):
        db = connect(str(tmp_path / "t.sqlite"))
        db.conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        try:
            outcomes[n] = committer.run(db, fn)
        except IdentityTaken as exc:
            outcomes[n] = exc

    first = threading.Thread(target=worker, args=(0, slow_first))
    first.start()
    started.wait()
    others = [threading.Thread(target=worker, args=(n, job(n))) for n in range(1, 10)]
    for thread in others:
        thread.start()
    for thread in [first] + others:
        thread.join(10)
    assert outcomes[0] == "first"
    for n in range(1, 10):
        if n % 3 == 0:
            assert isinstance(outcomes[n], IdentityTaken)
        else:
            assert outcomes[n] == n
    # refused jobs left nothing behind, accepted ones all committed
    assert values(database) == sorted(f"k{n}" for n in range(10) if n == 0 or n % 3)
    # the nine queued jobs were committed together, not one COMMIT each
    assert len(commits) == 2


def test_failed_commit_fails_every_job_in_the_batch(tmp_path, database):
    """A deferred foreign key fails only at COMMIT: no job of the batch may succeed."""
    database.conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    database.conn.execute("CREATE TABLE child (pid REFERENCES parent(id)"
                          " DEFERRABLE INITIALLY DEFERRED)")
    committer = GroupCommit()
    started = threading.Event()
    outcomes = {}

    def slow_good(db):
        started.set()
        time.sleep(0.3)
        db.conn.execute("INSERT INTO state VALUES ('k1', 1)")
        return "good"

    def orphan(db):
        db.conn.execute("INSERT INTO child VALUES (42)")
        return "orphan"

    def worker(name, fn):
        try:
            outcomes[name] = committer.run(connect(str(tmp_path / "t.sqlite")), fn)
        except Exception as exc:
            outcomes[name] = exc

    first = threading.Thread(target=worker, args=("good", slow_good))
    first.start()
    started.wait()
    second = threading.Thread(target=worker, args=("orphan", orphan))
    second.start()
    first.join(10)
    second.join(10)
    # good ran in the first batch alone and committed; orphan's batch failed at COMMIT
    assert outcomes["good"] == "good"
    assert "FOREIGN KEY" in str(outcomes["orphan"])
    assert database.conn.execute("SELECT count(*) FROM child").fetchone()[0] == 0
    # a batch of two where the commit fails: both see the failure, nothing is stored
    started.clear()
    third = threading.Thread(target=worker, args=("good2", slow_good))
    third.start()
    started.wait()
    fourth = threading.Thread(target=worker, args=("slow_orphan", orphan))
    fifth = threading.Thread(target=worker, args=("k3", lambda db: db.conn.execute(
        "INSERT INTO state VALUES ('k3', 3)") and "k3"))
    fourth.start()
    fifth.start()
    for thread in (third, fourth, fifth):
        thread.join(10)
    assert "FOREIGN KEY" in str(outcomes["slow_orphan"])
    assert "FOREIGN KEY" in str(outcomes["k3"])
    assert values(database) == ["k1"]
    assert committer.run(database, lambda db: "still usable") == "still usable"

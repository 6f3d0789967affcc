"""The database: WAL mode, group commit (keyserver.storage.db.GroupCommit) with shared
COMMITs and isolated failures, and appends that are whole or absent."""

import threading
import time

import pytest

from client.protocol.errors import IdentityTaken
from conftest import mint
from keyserver import create_app
from keyserver.service import uids
from keyserver.storage import chain, db as keyserver_db
from keyserver.storage.db import GroupCommit, connect, init_db
from keyserver.instance import init_instance


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


def test_app_database_runs_in_wal_mode(app):
    with app.app_context():
        conn = keyserver_db.get_db().conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


TABLES = ("chain", "uids", "identities", "history", "keyhashes", "spent_tokens")


def rows(app):
    with app.app_context():
        conn = keyserver_db.get_db().conn
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
                for table in TABLES}


class Crash(Exception):
    pass


def crash_after_chain_row(monkeypatch, reached):
    """The chain entry is inserted (checked from inside the transaction), then boom."""
    append = chain.append

    def failing(db, *args, **kwargs):
        head = append(db, *args, **kwargs)
        assert db.conn.in_transaction
        assert db.conn.execute("SELECT entry FROM chain WHERE pos = ?",
                               (head.pos,)).fetchone()[0] == head.entry
        reached.append(head.pos)
        raise Crash("after the chain row")

    monkeypatch.setattr(chain, "append", failing)


def crash_after_every_row(monkeypatch, reached):
    """Chain, repository and index rows are all written, then boom before COMMIT."""
    store = uids.store_uid_message

    def failing(db, message, *args, **kwargs):
        store(db, message, *args, **kwargs)
        assert db.conn.execute("SELECT count(*) FROM identities WHERE identity = ?",
                               (message.identity,)).fetchone()[0] == 1
        reached.append(message.identity)
        raise Crash("after every row")

    monkeypatch.setattr(uids, "store_uid_message", failing)


@pytest.mark.parametrize("crash", [crash_after_chain_row, crash_after_every_row])
@pytest.mark.parametrize("update", [False, True], ids=["create", "update"])
def test_append_failing_halfway_leaves_nothing(app, client, runner, users, monkeypatch, crash,
                                               update):
    alice = users.register("alice@example.org")
    if update:
        message, _ = users.update_message(alice)
    else:
        message, _, _ = users.create_message("bob@example.org")
    identity = message["content"]["identity"]
    before, head = rows(app), client.get("/v1/hashchain/head").json
    lookup = client.get(f"/v1/users/{identity}")
    token = mint(app)
    reached = []
    with monkeypatch.context() as patch:
        crash(patch, reached)
        response = users.put(identity, message, token=token)
    assert len(reached) == 1        # it failed where meant to, not earlier
    assert (response.status_code, response.json["errcode"]) == (500, "UNAVAILABLE")
    assert rows(app) == before
    assert client.get("/v1/hashchain/head").json == head
    after = client.get(f"/v1/users/{identity}")
    assert (after.status_code, after.json) == (lookup.status_code, lookup.json)
    verified = runner.invoke(args=["chain", "verify"])
    assert verified.exit_code == 0
    assert verified.output == f"chain OK: {head['pos'] + 1} entries; Merkle tree OK\n"
    # nothing half-done is in the way: the same message and token now go through
    response = users.put(identity, message, token=token)
    assert response.status_code == (200 if update else 201), response.json
    assert response.json["entry"]["hashchain_pos"] == head["pos"] + 1
    assert runner.invoke(args=["chain", "verify"]).exit_code == 0


def test_a_repeated_nonce_is_redrawn_and_other_clashes_raise(database, monkeypatch):
    import sqlite3

    from client.protocol.hashchain import ENTRY_SIZE

    draws = iter([bytes(8), bytes(8), b"\x01" * 8])
    monkeypatch.setattr(chain.os, "urandom", lambda n: next(draws))
    with keyserver_db.transaction(database):
        first = chain.append(database, "a@example.org", bytes(32), 1)
        second = chain.append(database, "b@example.org", bytes(32), 2)   # nonce redrawn
    assert (first.pos, second.pos) == (0, 1) and len(second.entry) == ENTRY_SIZE
    assert second.entry[33:41] == b"\x01" * 8
    fresh = iter(bytes([n]) * 8 for n in range(2, 6))   # a retrying loop would run dry
    monkeypatch.setattr(chain.os, "urandom", lambda n: next(fresh))
    monkeypatch.setattr(chain, "head", lambda db: first)   # a stale head: pos 1 again
    with pytest.raises(sqlite3.IntegrityError):
        with keyserver_db.transaction(database):
            chain.append(database, "c@example.org", bytes(32), 3)


def test_requests_never_create_a_database(tmp_path):
    """A server pointed at a folder without an instance fails its requests, and
    leaves the folder empty for ``keyserver init``."""
    folder = tmp_path / "instance"
    folder.mkdir()
    answer = create_app(instance_path=str(folder)).test_client().get("/v1/hashchain/head")
    assert answer.status_code == 500 and answer.json["errcode"] == "UNAVAILABLE"
    assert list(folder.iterdir()) == []
    init_instance(str(folder), "example.org", "http://127.0.0.1:5000", ["example.org"])
    assert (folder / "keyserver.sqlite").exists()

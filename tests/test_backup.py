"""``keyserver backup`` / ``restore`` and the guard against a shrunk published log."""

import json
import os
import sqlite3
import stat
import threading
import time

import pytest
from click.testing import CliRunner

from conftest import UserActions
from keyserver import create_app
from keyserver.cli import main
from keyserver.instance import LogShrunk
from keyserver.loadgen import synthetic_identity
from keyserver.service import checkpoints
from keyserver.service.signing import key_file_path, read_log_key
from keyserver.storage import db, published


def run(*args):
    return CliRunner().invoke(main, list(args))


def make_checkpoint(app) -> int:
    log_key = read_log_key(key_file_path(app.instance_path, app.config["LOG_KEY_FILE"]))
    with app.app_context():
        made = checkpoints.make(db.get_db(), log_key, 0, int(time.time() * 1000))
    return made.tree_size


def identities(path) -> set[str]:
    conn = sqlite3.connect(path / "keyserver.sqlite")
    try:
        return {row[0] for row in conn.execute("SELECT identity FROM identities")}
    finally:
        conn.close()


def test_a_checkpoint_records_the_published_size_outside_the_database(instance):
    app = create_app({"TESTING": True}, instance_path=str(instance))
    UserActions(app.test_client()).register("a@example.org")
    size = make_checkpoint(app)
    assert published.read(str(instance)) == size == 2
    assert stat.S_IMODE(os.stat(instance / "published_size").st_mode) == 0o600
    assert published.record(str(instance), 1) == 2   # never lowered


def test_a_backup_during_sustained_writes_restores_every_acknowledged_write(instance, tmp_path):
    app = create_app({"TESTING": True}, instance_path=str(instance))
    UserActions(app.test_client()).register("first@example.org")
    make_checkpoint(app)
    acknowledged: list[str] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def write():
        users = UserActions(app.test_client())
        number = 0
        try:
            while not stop.is_set():
                identity = synthetic_identity("w", number, "example.org")
                users.register(identity)   # asserts 201
                acknowledged.append(identity)
                number += 1
        except BaseException as exc:   # reported below
            failures.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(acknowledged) < 5 and not failures:
            time.sleep(0.01)
        assert not failures, failures
        before = list(acknowledged)   # acknowledged before the backup started
        result = run("backup", str(tmp_path / "backup"), "--instance", str(instance))
        assert result.exit_code == 0, result.output
        during = len(acknowledged)
        while len(acknowledged) < during + 3 and not failures:   # writes went on
            time.sleep(0.01)
    finally:
        stop.set()
        writer.join(60)
    assert not failures, failures
    backup = tmp_path / "backup"
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o700
    names = set(os.listdir(backup))
    assert {"keyserver.sqlite", "config.py", "signing.key", "log.key", "token_keys",
            "backup.json"} <= names
    assert not names & {"keyserver.sqlite-wal", "keyserver.sqlite-shm", "keyserver.sqlite.lock"}
    for parent, folders, files in os.walk(backup):
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(parent, name)).st_mode) == 0o600
    manifest = json.loads((backup / "backup.json").read_text())
    assert manifest["checkpoint_size"] == 2
    assert manifest["chain_length"] >= 2 + len(before)

    restored = tmp_path / "restored"
    result = run("restore", str(backup), "--instance", str(restored))
    assert result.exit_code == 0, result.output
    assert "chain OK" in result.output
    assert set(before) <= identities(restored)
    assert len(identities(restored)) == manifest["chain_length"]   # one entry each
    result = run("chain", "verify", "--instance", str(restored))
    assert result.exit_code == 0, result.output
    # It serves: its chain is as long as what it published.
    served = create_app({"TESTING": True}, instance_path=str(restored))
    assert served.test_client().get("/v1/hashchain/head").status_code == 200
    UserActions(served.test_client()).register("after@example.org")


def test_backup_and_restore_never_overwrite(instance, tmp_path):
    (tmp_path / "taken").mkdir()
    result = run("backup", str(tmp_path / "taken"), "--instance", str(instance))
    assert result.exit_code != 0 and "already exists" in result.output
    assert os.listdir(tmp_path / "taken") == []
    result = run("backup", str(tmp_path / "b"), "--instance", str(instance))
    assert result.exit_code == 0, result.output
    result = run("restore", str(tmp_path / "b"), "--instance", str(instance))
    assert result.exit_code != 0 and "already holds an instance" in result.output
    result = run("restore", str(instance), "--instance", str(tmp_path / "x"))
    assert result.exit_code != 0 and "not a keyserver backup" in result.output


def published_beyond_backup(instance, tmp_path) -> int:
    """A backup in tmp_path/b holding 2 entries, then 2 more entries and a checkpoint:
    the published tree size (4), more than the backup holds."""
    app = create_app({"TESTING": True}, instance_path=str(instance))
    users = UserActions(app.test_client())
    users.register("a@example.org")
    assert run("backup", str(tmp_path / "b"), "--instance", str(instance)).exit_code == 0
    users.register("b@example.org")
    users.register("c@example.org")
    return make_checkpoint(app)


def test_a_restored_log_shorter_than_published_refuses_to_serve(instance, tmp_path):
    published_size = published_beyond_backup(instance, tmp_path)
    assert published_size == 4

    # The lost instance's published_size is known (kept, or from monitors).
    restored = tmp_path / "restored"
    result = run("restore", str(tmp_path / "b"), "--instance", str(restored),
                 "--published-size", str(published_size))
    assert result.exit_code != 0
    assert "chain OK, 2 entries" in result.output
    assert "refuses to serve" in result.output
    assert published.read(str(restored)) == 4
    with pytest.raises(LogShrunk, match="published a tree of size 4"):
        create_app(instance_path=str(restored))
    for command in (["run"], ["worker", "--once"]):
        result = run(*command, "--instance", str(restored))
        assert result.exit_code != 0 and "refusing to serve" in result.output, result.output
    # Inspecting it still works.
    assert run("chain", "verify", "--instance", str(restored)).exit_code == 0

    # The same from the target folder's previous file, kept when the instance was lost.
    again = tmp_path / "again"
    again.mkdir()
    published.record(str(again), 3)
    result = run("restore", str(tmp_path / "b"), "--instance", str(again))
    assert result.exit_code != 0 and "refuses to serve" in result.output
    with pytest.raises(LogShrunk):
        create_app(instance_path=str(again))


def test_accepting_a_shorter_log_records_the_decision_and_serves(instance, tmp_path):
    assert published_beyond_backup(instance, tmp_path) == 4

    refused = run("restore", str(tmp_path / "b"), "--instance", str(tmp_path / "refused"),
                  "--published-size", "4")
    assert refused.exit_code != 0 and "--accept-shorter-log" in refused.output

    restored = tmp_path / "restored"
    result = run("restore", str(tmp_path / "b"), "--instance", str(restored),
                 "--published-size", "4", "--accept-shorter-log")
    assert result.exit_code == 0, result.output
    assert "chain OK, 2 entries" in result.stdout
    assert "published a tree of size 4" in result.stderr
    assert "report this server as having forked its log" in result.stderr
    assert published.read(str(restored)) == 2
    [decision] = [json.loads(line) for line in
                  (restored / published.SHRINKS).read_text().splitlines()]
    assert decision["published_size"] == 4 and decision["restored_length"] == 2
    assert decision["restored_from"] == str(tmp_path / "b")
    assert stat.S_IMODE(os.stat(restored / published.SHRINKS).st_mode) == 0o600
    # It serves, and guards its new published size from there on.
    served = create_app({"TESTING": True}, instance_path=str(restored))
    UserActions(served.test_client()).register("again@example.org")
    assert make_checkpoint(served) == 3 == published.read(str(restored))
    # The record travels with its backups, and a second decision is appended to it.
    assert run("backup", str(tmp_path / "b2"), "--instance", str(restored)).exit_code == 0
    assert (tmp_path / "b2" / published.SHRINKS).exists()
    result = run("restore", str(tmp_path / "b"), "--instance", str(tmp_path / "third"),
                 "--published-size", "3", "--accept-shorter-log")
    assert result.exit_code == 0, result.output
    assert published.read(str(tmp_path / "third")) == 2
    third = (tmp_path / "third" / published.SHRINKS).read_text().splitlines()
    assert [json.loads(line)["published_size"] for line in third] == [3]   # b had none
    result = run("restore", str(tmp_path / "b2"), "--instance", str(tmp_path / "fourth"),
                 "--published-size", "9", "--accept-shorter-log")
    assert result.exit_code == 0, result.output
    decisions = [json.loads(line) for line in
                 (tmp_path / "fourth" / published.SHRINKS).read_text().splitlines()]
    assert [(d["published_size"], d["restored_length"]) for d in decisions] == [(4, 2), (9, 3)]


def test_accepting_a_shorter_log_when_nothing_is_shorter_changes_nothing(instance, tmp_path):
    app = create_app({"TESTING": True}, instance_path=str(instance))
    UserActions(app.test_client()).register("a@example.org")
    assert make_checkpoint(app) == 2
    assert run("backup", str(tmp_path / "b"), "--instance", str(instance)).exit_code == 0
    restored = tmp_path / "restored"
    result = run("restore", str(tmp_path / "b"), "--instance", str(restored),
                 "--accept-shorter-log")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert published.read(str(restored)) == 2
    assert not (restored / published.SHRINKS).exists()

"""Token key rotation (§10): a key's file and its row appear together or not at all."""

import os
import sqlite3

import pytest
from click.testing import CliRunner

from client.clock import now_ms
from keyserver.http.context import policy, server_keys, token_keyring
from keyserver.service import own, tokenkeys
from keyserver.storage import chain, db, tokens
from keyserver.cli import main
from conftest import fail_after


def stored(app) -> tuple[list[str], list[str], int]:
    """The files in ``token_keys/``, the file names the rows hold, and the chain's length."""
    with app.app_context():
        rows = [key.filename for key in tokens.all_keys(db.get_db())]
        length = chain.head(db.get_db()).pos + 1
    return (sorted(os.listdir(os.path.join(app.instance_path, tokenkeys.KEY_DIR))), sorted(rows),
            length)


def rotate(app):
    with app.app_context():
        return tokenkeys.rotate(db.get_db(), app.instance_path, policy(), server_keys(), now_ms())


def listed(app):
    with app.app_context():
        return own.current(db.get_db()).token_keys


def test_rotation_adds_one_file_and_its_row_and_lists_the_key_on_the_chain(app):
    """§10.4: the new key and the newest previous one are listed by an update of
    keyserver@, appended in the rotation's transaction; at most two are listed."""
    [first] = listed(app)
    files, rows, length = stored(app)
    key = rotate(app)
    files, rows, after = stored(app)
    assert files == rows and len(rows) == 2 and key.filename in rows
    assert after == length + 1 and listed(app) == (first, key.key_id)
    with app.app_context():
        assert token_keyring().private_key(key).public_key().public_numbers().e == 65537
        assert [k.key_id for k in tokenkeys.usable_keys(db.get_db(), now_ms())] == \
            [first, key.key_id]
    third = rotate(app)
    assert listed(app) == (key.key_id, third.key_id)
    with app.app_context():   # the first key is no longer redeemed, though not expired
        assert token_keyring().find_valid(db.get_db(), first, now_ms()) is None
        assert token_keyring().find_valid(db.get_db(), key.key_id, now_ms()) is not None


def refuse_inserts(app):
    with app.app_context():
        db.get_db().conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON token_keys"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END")


@pytest.mark.parametrize("failure", [
    "insert", "write", "write-interrupted", "after-rename", "after-rename-interrupted",
])
def test_failed_rotation_leaves_no_file_and_no_row(app, monkeypatch, failure):
    """Before the fix the file was written first: a failing insert left it orphaned."""
    before = stored(app)
    error = KeyboardInterrupt() if failure.endswith("interrupted") else OSError("disk full")
    if failure == "insert":
        refuse_inserts(app)
        error = sqlite3.IntegrityError()
    elif failure.startswith("write"):
        fail_after(monkeypatch, tokenkeys, "write_secret", error)
    else:
        fail_after(monkeypatch, tokenkeys, "fsync_directory", error)
    with pytest.raises(type(error)):
        rotate(app)
    assert stored(app) == before


def test_rotate_key_command_refuses_a_key_expired_when_made(instance, monkeypatch):
    before = sorted(os.listdir(instance / tokenkeys.KEY_DIR))
    monkeypatch.setenv("KEYSERVER_TOKEN_KEY_LIFETIME", "0")
    result = CliRunner().invoke(main, ["tokens", "rotate-key", "--instance", str(instance)])
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1
    assert "TOKEN_KEY_LIFETIME must be" in result.output
    assert sorted(os.listdir(instance / tokenkeys.KEY_DIR)) == before

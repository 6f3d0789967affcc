"""``keyserver init``: the instance folder and chain entry 0 (§7.2)."""

import os
import stat

import pytest

from client.encoding import b64decode
from client.keys import verify_detached
from client.hashchain import ZERO_HASH, search_identity, verify_entries
from client.signedjson import verify_signed_json
from client.uidmessage import decrypt_uid_message, parse_uid_message
from keyserver import chainstore, db, repository, signing
from keyserver.cli import main
from keyserver.instance import InstanceExists, init_instance


def test_instance_files_and_modes(instance):
    assert {"config.py", "keyserver.sqlite", "signing.key"} <= set(os.listdir(instance))
    assert stat.S_IMODE(os.stat(instance / "signing.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(instance).st_mode) == 0o700
    assert "KEYSERVER_NAME = 'example.org'" in (instance / "config.py").read_text()


def test_entry_zero_is_the_servers_own_uid_message(app):
    with app.app_context():
        database = db.get_db()
        entries = chainstore.read_entries(database, 0, 10)
        assert len(entries) == 1
        assert verify_entries(entries, ZERO_HASH) == entries[0][:32]
        [(pos, uid_hash)] = search_identity(entries, "keyserver@example.org")
        assert pos == 0
        key = signing.current_key()
        reply = repository.fetch_reply(database, entries[0][121:153])
    verify_signed_json(reply, "example.org", key.key_id, bytes(key.signing_key.verify_key))
    assert reply["entry"]["hashchain_pos"] == 0
    assert b64decode(reply["entry"]["hashchain_entry"]) == entries[0]
    message = parse_uid_message(decrypt_uid_message(
        b64decode(reply["entry"]["uid_message_encrypted"]), uid_hash))
    assert message.identity == "keyserver@example.org"
    assert message.msgcount == 0 and message.lastentry == bytes(32)
    assert message.sigkey.pubkey == bytes(key.signing_key.verify_key)
    assert message.not_after_ts - message.not_before_ts == app.config["MAX_UID_LIFETIME"]
    assert verify_detached(message.sigkey.pubkey, message.content_bytes, message.selfsignature)


def test_init_refuses_to_overwrite(instance):
    before = (instance / "signing.key").read_bytes()
    with pytest.raises(InstanceExists):
        init_instance(str(instance), "other.org", "http://x", ["other.org"])
    assert (instance / "signing.key").read_bytes() == before


def test_init_cli_errors_are_messages(tmp_path):
    from click.testing import CliRunner

    runner = CliRunner()
    result = runner.invoke(main, ["init", "--instance", str(tmp_path / "i"), "--server-name",
                                  "Bad Name", "--url", "http://x"])
    assert result.exit_code == 1 and "not a valid server name" in result.output
    assert not (tmp_path / "i" / "config.py").exists()
    ok = runner.invoke(main, ["init", "--instance", str(tmp_path / "i"), "--server-name",
                              "example.org", "--url", "http://x"])
    assert ok.exit_code == 0, ok.output
    again = runner.invoke(main, ["init", "--instance", str(tmp_path / "i"), "--server-name",
                                 "example.org", "--url", "http://x"])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output

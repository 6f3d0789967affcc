"""The server's signing keys over time (§11.1, §11.2): the key document, rotation
with two keys recorded on the chain, and the background worker's renewal."""

import pytest
import signedjson.key
import signedjson.sign

from client.clock import now_ms
from client.protocol.encoding import b64decode
from client.protocol.errors import VerificationError
from client.protocol.identity import server_identity
from client.protocol.serverkeys import parse_key_document
from keyserver.cli import main
from keyserver.service import own
from keyserver.storage import db
from conftest import at, keyclient

HOUR_MS = 3600 * 1000


def document(client):
    response = client.get("/_matrix/key/v2/server")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.json


def verifies_with_signedjson(doc):
    """The document verifies with the signedjson library (Matrix's), by every key."""
    for key_id, value in doc["verify_keys"].items():
        verify_key = signedjson.key.decode_verify_key_base64("ed25519", key_id.split(":")[1],
                                                             value["key"])
        signedjson.sign.verify_signed_json(doc, doc["server_name"], verify_key)


def rotate(instance, *args):
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["keys", "rotate", "--instance", str(instance), *args])
    return result


def test_the_key_document_is_signed_and_valid_for_the_configured_time(app, client):
    t = now_ms()
    with at(t):
        doc = document(client)
    verifies_with_signedjson(doc)
    parsed = parse_key_document(doc, "example.org")
    assert doc["valid_until_ts"] == t + app.config["KEY_VALIDITY"]
    assert doc["old_verify_keys"] == {} and len(doc["verify_keys"]) == 1
    capabilities = client.get("/v1/capabilities").json
    assert {k: b64decode(v) for k, v in capabilities["sigpubkeys"].items()} == \
        dict(parsed.verify_keys)


def test_a_key_validity_under_an_hour_is_refused(instance):
    from keyserver import create_app
    from keyserver.config import ConfigError

    with pytest.raises(ConfigError, match="KEY_VALIDITY"):
        create_app({"KEY_VALIDITY": HOUR_MS - 1}, instance_path=str(instance))


def test_rotation_installs_the_new_key_on_the_chain_with_an_overlap(app, client, instance):
    t = now_ms()
    old = document(client)
    [(old_id, old_key)] = old["verify_keys"].items()
    with at(t):
        result = rotate(instance, "--overlap", "30m")
    assert result.exit_code == 0, result.output
    with at(t + 1):
        during = document(client)
    verifies_with_signedjson(during)
    assert len(during["verify_keys"]) == 2 and during["verify_keys"][old_id] == old_key
    [new_id] = set(during["verify_keys"]) - {old_id}
    assert set(during["signatures"]["example.org"]) == {old_id, new_id}
    with at(t + 30 * 60_000):                          # the overlap has ended
        after = document(client)
    verifies_with_signedjson(after)
    assert list(after["verify_keys"]) == [new_id]
    assert after["old_verify_keys"] == {old_id: {"key": old_key["key"],
                                                 "expired_ts": t + 30 * 60_000}}
    # Replies are signed by the new key at once; the chain installs it (§7.2).
    with app.app_context():
        latest = own.latest(db.get_db())
    assert latest.msgcount == 1 and latest.usersignature
    reply = client.get(f"/v1/users/{server_identity('example.org')}").json
    assert list(reply["uid_message_reply"]["signatures"]["example.org"]) == [new_id]
    # Never three current keys.
    with at(t + 60_000):
        refused = rotate(instance)
    assert refused.exit_code == 1 and "would make three keys current" in refused.output
    with at(t + 30 * 60_000):
        assert rotate(instance).exit_code == 0


def test_a_client_follows_a_rotation(app_server, tmp_path):
    home = tmp_path / "home"
    assert keyclient(home, "server", "add", app_server.url).exit_code == 0
    assert keyclient(home, "sync").exit_code == 0
    assert rotate(app_server.instance).exit_code == 0
    result = keyclient(home, "sync")
    assert result.exit_code == 0, result.output
    assert "since position 1" in result.output


def test_keys_list_shows_the_windows(instance):
    from click.testing import CliRunner

    assert rotate(instance).exit_code == 0
    listed = CliRunner().invoke(main, ["keys", "list", "--instance", str(instance)]).output
    lines = listed.splitlines()
    assert len(lines) == 2 and "current (overlap) until" in lines[0] and "signing" in lines[1]


def test_the_worker_renews_the_servers_own_message_once_due(app, instance):
    from click.testing import CliRunner

    with app.app_context():
        first = own.latest(db.get_db())
    margin = app.config["OWN_RENEWAL_MARGIN"]

    def run_worker():
        result = CliRunner().invoke(main, ["worker", "--once", "--instance", str(instance)])
        assert result.exit_code == 0, result.output
        return result.output

    with at(first.not_after_ts - margin):
        assert "renewed" not in run_worker()
    with at(first.not_after_ts - margin + 1):
        assert "renewed keyserver@example.org" in run_worker()
        assert "renewed" not in run_worker()               # once: it is fresh again
    with app.app_context():
        renewed = own.latest(db.get_db())
    assert renewed.msgcount == 1 and renewed.sigkey == first.sigkey
    assert renewed.server == first.server
    assert renewed.not_after_ts == first.not_after_ts - margin + 1 + \
        app.config["MAX_UID_LIFETIME"]


def test_a_forged_key_document_is_refused(client):
    doc = document(client)
    doc["valid_until_ts"] += 1
    with pytest.raises(VerificationError, match="not signed by its own key"):
        parse_key_document(doc)
    with pytest.raises(VerificationError, match="is for example.org, not other.org"):
        parse_key_document(document(client), "other.org")


def test_a_restart_alone_appends_nothing(app, instance):
    from keyserver import create_app

    with app.app_context():
        length = db.get_db().conn.execute("SELECT count(*) FROM chain").fetchone()[0]
    create_app(instance_path=str(instance))
    with app.app_context():
        assert db.get_db().conn.execute("SELECT count(*) FROM chain").fetchone()[0] == length


def test_expired_token_keys_leave_the_chains_list(app, instance, monkeypatch):
    from click.testing import CliRunner

    with app.app_context():
        [key_id] = own.current(db.get_db()).token_keys
        from keyserver.storage.tokens import all_keys
        [key] = all_keys(db.get_db())
    with at(key.not_after_ts):
        result = CliRunner().invoke(main, ["worker", "--once", "--instance", str(instance)])
    assert "retired expired token keys" in result.output
    with app.app_context():
        assert own.current(db.get_db()).token_keys == ()
    assert key_id == key.key_id

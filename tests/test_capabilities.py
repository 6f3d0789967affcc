"""``GET /v1/capabilities`` (§12): complete, signed by the current key."""

from freezegun import freeze_time

from client.protocol.encoding import b64encode
from client.protocol.signedjson import verify_signed_json
from keyserver.http.context import current_key

FIELDS = {"server_name", "version", "methods", "domains", "keyrepository_uris",
          "keyinitrepository_uris", "hashchain_uris", "hashchain_head", "sigpubkeys",
          "token_keys", "token_prices", "limits", "log_vkey", "ts", "signatures",
          "checkpoint", "tiles_url"}
LIMITS = {"max_chunk", "max_uid_lifetime_ms", "reclaim_grace_ms", "lastentry_max_age_ms",
          "max_keyinit_lifetime_ms", "max_keyinits_per_identity", "max_keyinits_per_request",
          "max_request_bytes"}


def test_capabilities_are_complete_and_signed(app, client):
    with freeze_time("2026-11-22 12:00:00"):
        body = client.get("/v1/capabilities").json
    assert set(body) == FIELDS
    assert set(body["limits"]) == LIMITS
    assert body["server_name"] == "example.org" and body["domains"] == ["example.org"]
    assert body["ts"] == 1795348800000
    with app.app_context():
        key = current_key()
    assert body["sigpubkeys"] == {key.key_id: b64encode(key.pubkey)}
    verify_signed_json(body, "example.org", key.key_id, key.pubkey)
    head = client.get("/v1/hashchain/head").json
    assert body["hashchain_head"] == {"pos": head["pos"], "entry": head["entry"]}
    # §8: no checkpoint yet; the tiles are served here.
    assert (body["checkpoint"], body["tiles_url"]) == (None, "http://127.0.0.1:5000")


def test_capabilities_carry_the_newest_checkpoint_and_the_tiles_url(instance):
    from click.testing import CliRunner

    from keyserver import create_app
    from keyserver.cli import main

    result = CliRunner().invoke(main, ["worker", "--once", "--instance", str(instance)])
    assert result.exit_code == 0, result.output
    app = create_app({"TILES_URL": "https://tiles.example/log"}, instance_path=str(instance))
    body = app.test_client().get("/v1/capabilities").json
    assert body["tiles_url"] == "https://tiles.example/log"
    assert body["checkpoint"] == app.test_client().get("/checkpoint").get_data(as_text=True)
    assert body["checkpoint"].startswith("example.org/keyserver\n1\n")


def test_limits_follow_configuration(instance):
    from keyserver import create_app

    app = create_app({"MAX_CHUNK": 500, "MAX_KEYINITS_PER_IDENTITY": 7},
                     instance_path=str(instance))
    limits = app.test_client().get("/v1/capabilities").json["limits"]
    assert limits["max_chunk"] == 500 and limits["max_keyinits_per_identity"] == 7


def test_environment_overrides_config_file(instance, monkeypatch):
    from keyserver import create_app

    monkeypatch.setenv("KEYSERVER_DOMAINS", '["example.org", "other.org"]')
    monkeypatch.setenv("KEYSERVER_MAX_CHUNK", "123")
    app = create_app(instance_path=str(instance))
    assert app.config["DOMAINS"] == ["example.org", "other.org"]
    assert app.config["MAX_CHUNK"] == 123
    assert app.config["KEYSERVER_NAME"] == "example.org"  # from the instance's config.py

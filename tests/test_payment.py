"""Paying for writes with tokens (§10.1, §10.2): every bad token form, exactly-once
spending in the write's transaction, free operations, key rotation and expiry."""

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from client.protocol.encoding import b64decode, b64url_decode, b64url_encode, sha256
from client.protocol.tokens import (Token, finalize_tokens, format_authorization, generate_token_key,
                           make_token_input, mint_token, parse_spki, token_challenge,
                           token_key_id)
from conftest import TEST_TOKEN_KEY_LIFETIME, at, create_vouchers, issue, mint
from keyserver import create_app
from keyserver.http.context import token_keyring
from keyserver.storage import db, tokens


def spent_count(app):
    with app.app_context():
        return db.get_db().conn.execute("SELECT count(*) FROM spent_tokens").fetchone()[0]


def head_pos(client):
    return client.get("/v1/hashchain/head").json["pos"]


def test_capabilities_publish_token_key_and_prices(app, client):
    body = client.get("/v1/capabilities").json
    assert body["token_prices"] == {"create_uid": 1, "update_uid": 1, "add_keyinit": 1}
    [key] = body["token_keys"]
    spki = b64decode(key["spki"])
    assert b64decode(key["key_id"]) == sha256(spki)
    assert parse_spki(spki).key_size == 2048
    with app.app_context():
        stored = tokens.all_keys(db.get_db())[0]
    assert key["not_after_ts"] == stored.not_after_ts
    assert stored.not_after_ts - stored.created_ts == int(TEST_TOKEN_KEY_LIFETIME)


def test_token_key_file_is_private(instance):
    import os
    import stat

    [name] = os.listdir(instance / "token_keys")
    assert stat.S_IMODE(os.stat(instance / "token_keys" / name).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(instance / "token_keys").st_mode) == 0o700


def test_a_token_pays_once(app, client, users):
    token = mint(app)
    message, _, _ = users.create_message("alice@example.org")
    assert users.put("alice@example.org", message, token=token).status_code == 201
    second, _, _ = users.create_message("bob@example.org")
    response = users.put("bob@example.org", second, token=token)
    assert (response.status_code, response.json["errcode"]) == (401, "TOKEN_SPENT")
    assert spent_count(app) == 1


def test_missing_token_gets_challenge(app, client, users):
    message, _, _ = users.create_message("alice@example.org")
    response = users.put("alice@example.org", message, token=None)
    assert (response.status_code, response.json["errcode"]) == (401, "TOKEN_REQUIRED")
    scheme, _, params = response.headers["WWW-Authenticate"].partition(" ")
    assert scheme == "PrivateToken"
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    assert b64url_decode(fields["challenge"].strip('"')) == token_challenge("example.org")
    key = client.get("/v1/capabilities").json["token_keys"][0]
    assert b64url_decode(fields["token-key"].strip('"')) == b64decode(key["spki"])


def other_key_token(app, **kwargs):
    return mint_token(generate_token_key(), token_challenge("example.org")).to_bytes()


def forged(app, how):
    good = mint(app)
    if how == "truncated":
        return good[:-1]
    if how == "long":
        return good + b"\0"
    if how == "wrong type":
        return b"\x00\x01" + good[2:]
    if how == "bad signature":
        return good[:-1] + bytes([good[-1] ^ 1])
    if how == "tampered input":
        return good[:10] + bytes([good[10] ^ 1]) + good[11:]
    if how == "unknown key":
        return other_key_token(app)
    if how == "wrong challenge":
        with app.app_context():
            private = token_keyring().private_key(tokens.all_keys(db.get_db())[0])
        return mint_token(private, token_challenge("other.org")).to_bytes()
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "long", "wrong type", "bad signature",
                                 "tampered input", "unknown key", "wrong challenge"])
def test_bad_tokens_are_invalid_and_change_nothing(app, client, users, how):
    message, _, _ = users.create_message("alice@example.org")
    before = head_pos(client)
    response = users.put("alice@example.org", message, token=forged(app, how))
    assert (response.status_code, response.json["errcode"]) == (401, "TOKEN_INVALID"), how
    assert "WWW-Authenticate" in response.headers
    assert head_pos(client) == before and spent_count(app) == 0


@pytest.mark.parametrize("header", [
    'PrivateToken token="AAAA="',                 # padded
    'PrivateToken token="ab+/"',                  # not url-safe
    "PrivateToken",                               # no token parameter
    'PrivateToken token="a", token="b"',          # duplicate
])
def test_malformed_authorization_headers(users, header):
    message, _, _ = users.create_message("alice@example.org")
    response = users.put("alice@example.org", message, token=None,
                         headers={"Authorization": header})
    assert (response.status_code, response.json["errcode"]) == (401, "TOKEN_INVALID")


def test_other_auth_schemes_count_as_no_token(users):
    message, _, _ = users.create_message("alice@example.org")
    response = users.put("alice@example.org", message, token=None,
                         headers={"Authorization": "Bearer abc"})
    assert response.json["errcode"] == "TOKEN_REQUIRED"


def test_failed_write_spends_nothing(app, client, users):
    token = mint(app)
    message, _, _ = users.create_message("alice@example.org")
    bad = dict(message, selfsignature=message["escrowsignature"])
    response = users.put("alice@example.org", bad, token=token)
    assert response.json["errcode"] == "INVALID_SIGNATURE"
    assert spent_count(app) == 0
    assert users.put("alice@example.org", message, token=token).status_code == 201
    assert spent_count(app) == 1


def test_order_identity_rules_before_token_before_state(app, users):
    message, _, _ = users.create_message("admin@example.org")
    response = users.put("admin@example.org", message, token=None)
    assert response.json["errcode"] == "RESERVED_IDENTITY"
    users.register("alice@example.org")
    taken, _, _ = users.create_message("alice@example.org")
    assert users.put("alice@example.org", taken, token=None).json["errcode"] == \
        "TOKEN_REQUIRED"
    assert users.put("alice@example.org", taken).json["errcode"] == "IDENTITY_TAKEN"


@pytest.mark.parametrize("token", [None, b"garbage"])
def test_list_bounds_come_before_the_token(users, token):
    """§4.2.1: a list over its bound (§4) is a shape error, answered before the token."""
    message, _, _ = users.create_message("alice@example.org")
    message["content"]["repouris"] = ["http://127.0.0.1:5000"] * 5
    assert users.put("alice@example.org", message, token=token).json["errcode"] == \
        "INVALID_MESSAGE"


@pytest.mark.parametrize("token,errcode", [(None, "TOKEN_REQUIRED"),
                                           (b"garbage", "TOKEN_INVALID")])
def test_no_signature_is_checked_for_a_request_without_a_valid_token(monkeypatch, users,
                                                                     token, errcode):
    """An absent or invalid token decides the answer before any state is read, so the
    costly signature checks are skipped; the answer is the one §4.2.1 gives anyway."""
    from keyserver.service import uids

    checked = []
    monkeypatch.setattr(uids, "signature_error",
                        lambda *args: checked.append(args))
    message, _, _ = users.create_message("alice@example.org")
    bad = dict(message, selfsignature=message["escrowsignature"])
    assert users.put("alice@example.org", bad, token=token).json["errcode"] == errcode
    assert checked == []
    assert users.put("alice@example.org", message).status_code == 201
    assert len(checked) == 1


def test_free_operation_ignores_the_header(instance):
    from conftest import UserActions

    app = create_app({"TOKEN_PRICES": {"create_uid": 0, "update_uid": 1, "add_keyinit": 1}},
                     instance_path=str(instance))
    users = UserActions(app.test_client())
    message, _, _ = users.create_message("alice@example.org")
    response = users.put("alice@example.org", message, token=b"garbage")
    assert response.status_code == 201
    assert spent_count(app) == 0
    assert app.test_client().get("/v1/capabilities").json["token_prices"]["create_uid"] == 0


def test_rotated_key_keeps_old_tokens_valid_until_their_not_after(instance, app, client,
                                                                   users):
    old_token = mint(app)
    with app.app_context():
        old = tokens.all_keys(db.get_db())[0]
    longer = create_app({"TOKEN_KEY_LIFETIME": 2 * int(TEST_TOKEN_KEY_LIFETIME)},
                        instance_path=str(instance))
    result = longer.test_cli_runner().invoke(args=["tokens", "rotate-key"])
    assert result.exit_code == 0 and "new token key" in result.output
    keys = client.get("/v1/capabilities").json["token_keys"]
    assert len(keys) == 2
    new_token = mint(app)
    assert parse_token_key(new_token) != old.key_id     # the newest key issues
    with at(old.not_after_ts - 1):
        message, _, _ = users.create_message("alice@example.org")
        assert users.put("alice@example.org", message, token=old_token).status_code == 201
    old_token2 = mint_with(app, old)
    with at(old.not_after_ts):
        message, _, _ = users.create_message("bob@example.org")
        spent, before = spent_count(app), head_pos(client)
        response = users.put("bob@example.org", message, token=old_token2)
        assert (response.status_code, response.json["errcode"]) == (401, "TOKEN_INVALID")
        assert "expired" in response.json["error"]
        assert spent_count(app) == spent and head_pos(client) == before   # spent nothing
        assert client.get("/v1/users/bob@example.org").status_code == 404
        assert users.put("bob@example.org", message, token=new_token).status_code == 201
        assert len(client.get("/v1/capabilities").json["token_keys"]) == 1


def parse_token_key(raw):
    return raw[66:98]


def mint_with(app, key):
    with app.app_context():
        private = token_keyring().private_key(key)
    return mint_token(private, token_challenge("example.org")).to_bytes()


def test_mint_and_stats_commands(app, runner, users):
    result = runner.invoke(args=["tokens", "mint", "-n", "3"])
    assert result.exit_code == 0
    lines = result.output.split()
    assert len(lines) == 3 and len(set(lines)) == 3
    message, _, _ = users.create_message("alice@example.org")
    assert users.put("alice@example.org", message,
                     token=b64url_decode(lines[0])).status_code == 201
    stats = runner.invoke(args=["tokens", "stats"]).output
    assert "minted: 3" in stats and "spent: 1" in stats and "valid until" in stats


def stats_lines(runner) -> dict:
    result = runner.invoke(args=["tokens", "stats"])
    assert result.exit_code == 0, result.output
    return dict(line.split(": ", 1) for line in result.output.splitlines()
                if not line.startswith("key "))


def test_stats_count_tokens_issued_through_vouchers(app, client, runner, users):
    [code] = create_vouchers(runner, 5)
    assert stats_lines(runner) == {"issued via vouchers": "0", "minted": "0", "spent": "0",
                                   "unredeemed on valid vouchers": "5"}
    response, pending, public = issue(client, code, 3)
    assert response.status_code == 200
    assert stats_lines(runner) == {"issued via vouchers": "3", "minted": "0", "spent": "0",
                                   "unredeemed on valid vouchers": "2"}
    assert issue(client, code, 3)[0].json["errcode"] == "VOUCHER_INVALID"   # counts nothing
    tokens = finalize_tokens(public, pending, [b64decode(s) for s in response.json["blind_sigs"]])
    message, _, _ = users.create_message("alice@example.org")
    assert users.put("alice@example.org", message, token=tokens[0].to_bytes()).status_code == 201
    assert issue(client, code, 2)[0].status_code == 200
    assert stats_lines(runner) == {"issued via vouchers": "5", "minted": "0", "spent": "1",
                                   "unredeemed on valid vouchers": "0"}


def test_token_format_checks_are_those_of_the_library():
    """A token for our challenge and key id but signed by another key is refused."""
    other: rsa.RSAPrivateKey = generate_token_key()
    token_input = make_token_input(sha256(token_challenge("example.org")),
                                   token_key_id(other.public_key()))
    assert len(Token(token_input, bytes(256)).to_bytes()) == 354
    assert format_authorization(b"\x01").startswith('PrivateToken token="')
    assert b64url_encode(b"\x01") == "AQ"

"""Vouchers and blind issuance (§10.3), and unlinkability made visible."""

import json
import logging
import os
from pathlib import Path

import gmpy2
import pytest

from client.protocol.encoding import b64decode, b64encode, b64url_encode, sha256, typed_base32
from client.protocol.tokens import (AUTHENTICATOR_LEN, SigningFailure, finalize_tokens,
                                    parse_spki, prepare_blinded_tokens, token_challenge)
from conftest import DAY_MS, at, create_vouchers, issue, token_key
from keyserver.storage import db, tokens


def remaining(app):
    with app.app_context():
        return [row[0] for row in db.get_db().conn.execute(
            "SELECT remaining FROM vouchers ORDER BY created_ts")]


def test_voucher_buys_tokens_that_pay(app, client, runner, users):
    [code] = create_vouchers(runner, 5)
    response, pending, public = issue(client, code, 3)
    assert response.status_code == 200 and response.json["remaining"] == 2
    tokens = finalize_tokens(public, pending, [b64decode(s) for s in response.json["blind_sigs"]])
    message, _, _ = users.create_message("alice@example.org")
    assert users.put("alice@example.org", message, token=tokens[0].to_bytes()).status_code == 201
    assert remaining(app) == [2]


def test_asking_more_than_left_is_refused_whole(app, client, runner):
    [code] = create_vouchers(runner, 5)
    response, _, _ = issue(client, code, 6)
    assert (response.status_code, response.json["errcode"]) == (403, "VOUCHER_INVALID")
    assert "5 tokens left" in response.json["error"]
    assert remaining(app) == [5]
    assert issue(client, code, 5)[0].status_code == 200
    response, _, _ = issue(client, code, 1)
    assert response.json["errcode"] == "VOUCHER_INVALID" and remaining(app) == [0]


def test_codes_are_case_space_and_dash_tolerant(client, runner):
    [code] = create_vouchers(runner, 3)
    assert issue(client, " " + code.lower() + " ", 1)[0].status_code == 200
    assert issue(client, code.replace("-", ""), 1)[0].status_code == 200
    assert issue(client, code.replace("-", " ").lower(), 1)[0].status_code == 200


def test_codes_tolerate_the_typos_the_escrow_paper_does(app, client, runner):
    """0 for O, 1 for I, 8 for B (digits base32 never uses), as ``store.paper`` reads
    them; a voucher stored before this tolerance (its hash taken of the code without
    the mapping) is found the same way, since its code holds none of those digits."""
    [code] = create_vouchers(runner, 3)
    typo = code.replace("O", "0").replace("I", "1").replace("B", "8")
    assert issue(client, typo.lower(), 1)[0].status_code == 200
    older = "OIBO-" * 7 + "OIBO"
    with app.app_context():
        database = db.get_db()
        with db.transaction(database):
            database.conn.execute(
                "INSERT INTO vouchers (code_hash, label, tokens, remaining, created_ts,"
                " expires_ts) VALUES (?, 'v-older', 2, 2, 0, NULL)",
                (sha256("".join(older.upper().split()).replace("-", "").encode()),))
    assert issue(client, older.replace("O", "0").replace("I", "1").replace("B", "8"),
                 1)[0].status_code == 200
    assert issue(client, older, 1)[0].status_code == 200
    assert remaining(app) == [0, 2]   # the older first (created at 0)
    response, _, _ = issue(client, code.replace("A", "4", 1) if "A" in code else "4" + code, 1)
    assert response.json["errcode"] == "VOUCHER_INVALID"   # 4 is base32: not a look-alike


def test_a_revoked_voucher_buys_nothing_more(app, client, runner):
    result = runner.invoke(args=["vouchers", "create", "--tokens", "3", "--count", "2",
                                 "--json"])
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    assert [(v["tokens"], v["label"][:2]) for v in made] == [(3, "v-"), (3, "v-")]
    assert issue(client, made[0]["code"], 1)[0].status_code == 200
    result = runner.invoke(args=["vouchers", "revoke", made[0]["label"]])
    assert result.exit_code == 0 and "buys no more tokens" in result.output
    response, _, _ = issue(client, made[0]["code"], 1)
    assert (response.status_code, response.json["errcode"]) == (403, "VOUCHER_INVALID")
    assert "revoked" in response.json["error"]
    assert issue(client, made[1]["code"], 1)[0].status_code == 200   # only that one
    listing = runner.invoke(args=["vouchers", "list"]).output
    [revoked] = [line for line in listing.splitlines() if line.startswith(made[0]["label"])]
    assert "1/3 used  REVOKED" in revoked
    assert "unredeemed on valid vouchers: 2" in runner.invoke(args=["tokens", "stats"]).output
    again = runner.invoke(args=["vouchers", "revoke", made[0]["label"]])
    assert again.exit_code == 0
    unknown = runner.invoke(args=["vouchers", "revoke", "v-nothere"])
    assert unknown.exit_code == 1 and "no voucher labelled 'v-nothere'" in unknown.output
    assert remaining(app) == [2, 2]


@pytest.mark.parametrize("code", ["", "AAAA-BBBB", "not a voucher"])
def test_unknown_voucher(client, runner, code):
    create_vouchers(runner, 2)
    response, _, _ = issue(client, code, 1)
    assert (response.status_code, response.json["errcode"]) == (403, "VOUCHER_INVALID")


def test_voucher_expiry_boundary(app, client, runner):
    start = 1_800_000_000_000
    with at(start):
        [code] = create_vouchers(runner, 5, expires="1d")
    with at(start + DAY_MS - 1):
        assert issue(client, code, 1)[0].status_code == 200
    with at(start + DAY_MS):
        response, _, _ = issue(client, code, 1)
        assert response.json["errcode"] == "VOUCHER_INVALID" and "expired" in response.json["error"]
    assert remaining(app) == [4]


def issue_with(client, code, key, count):
    """POST messages blinded for ``key`` (a ``TokenKey`` row), whatever the capabilities list."""
    pending = prepare_blinded_tokens(parse_spki(key.spki), token_challenge("example.org"), count)
    return client.post("/v1/tokens/issue", json={
        "voucher": code, "token_key_id": b64encode(key.key_id),
        "blinded": [b64encode(p.blinded) for p in pending]})


def test_no_tokens_under_an_expired_token_key(app, client, runner):
    """A key issues while ``now < not_after_ts`` and never after (§10.4), also when a
    newer key is valid; the refused request is INVALID_MESSAGE, like an unknown key,
    and the voucher keeps every token."""
    [code] = create_vouchers(runner, 5, expires="never")
    with app.app_context():
        [old] = tokens.all_keys(db.get_db())
    with at(old.not_after_ts - DAY_MS):
        assert runner.invoke(args=["tokens", "rotate-key"]).exit_code == 0
    with app.app_context():
        [_, new] = tokens.all_keys(db.get_db())
    with at(old.not_after_ts - 1):
        assert issue_with(client, code, old, 2).status_code == 200
    assert remaining(app) == [3]
    with at(old.not_after_ts):
        response = issue_with(client, code, old, 2)
        assert (response.status_code, response.json["errcode"]) == (400, "INVALID_MESSAGE")
        assert "blind_sigs" not in response.json
        assert remaining(app) == [3]
        assert issue_with(client, code, new, 1).status_code == 200
    assert remaining(app) == [2]


def test_a_faulty_blind_signature_is_never_released(app, client, runner, monkeypatch, caplog):
    """A fault in one CRT half of one message (the p half of the second) would give
    away a factor of n: the request fails as a whole with 500, nothing is released,
    the voucher is not charged, and the operator finds the failure in the log."""
    [code] = create_vouchers(runner, 5)
    powmod_sec, calls = gmpy2.powmod_sec, []

    def faulty(base, exponent, modulus):
        calls.append(modulus)
        result = powmod_sec(base, exponent, modulus)
        return result + 1 if len(calls) == 3 else result

    monkeypatch.setattr(gmpy2, "powmod_sec", faulty)
    with caplog.at_level(logging.ERROR):
        response, _, _ = issue(client, code, 3)
    assert (response.status_code, response.json["errcode"]) == (500, "UNAVAILABLE")
    assert "blind_sigs" not in response.json
    assert len(calls) == 4 and calls[2] == calls[0]  # signing stopped at the second message
    assert remaining(app) == [5]
    assert any(isinstance(record.exc_info[1], SigningFailure)
               for record in caplog.records if record.exc_info)
    monkeypatch.undo()
    response, _, _ = issue(client, code, 3)
    assert response.status_code == 200 and remaining(app) == [2]


@pytest.mark.parametrize("change,errcode", [
    (lambda b: b.update(token_key_id=b64encode(bytes(32))), "INVALID_MESSAGE"),
    (lambda b: b.update(blinded=[]), "INVALID_MESSAGE"),
    (lambda b: b.update(blinded=["AAAA"]), "INVALID_MESSAGE"),
    (lambda b: b.update(blinded=[b64encode(b"\xff" * AUTHENTICATOR_LEN)]), "INVALID_MESSAGE"),
    (lambda b: b.update(blinded=b["blinded"] * 101), "INVALID_MESSAGE"),
    (lambda b: b.update(extra=1), "INVALID_MESSAGE"),
    (lambda b: b.pop("voucher"), "INVALID_MESSAGE"),
    (lambda b: b.update(voucher=5), "INVALID_MESSAGE"),
])
def test_bad_issue_requests_issue_nothing(app, client, runner, change, errcode):
    [code] = create_vouchers(runner, 500)
    key_id, public = token_key(client)
    pending = prepare_blinded_tokens(public, token_challenge("example.org"), 1)
    body = {"voucher": code, "token_key_id": b64encode(key_id),
            "blinded": [b64encode(pending[0].blinded)]}
    change(body)
    response = client.post("/v1/tokens/issue", json=body)
    assert (response.status_code, response.json["errcode"]) == (400, errcode)
    assert remaining(app) == [500]


def test_vouchers_list_shows_use_not_codes(client, runner):
    codes = create_vouchers(runner, 4, count=2)
    issue(client, codes[0], 3)
    listing = runner.invoke(args=["vouchers", "list"]).output
    assert "3/4 used" in listing and "0/4 used" in listing
    assert all(code not in listing and code[5:] not in listing for code in codes)
    # not even part of one: the labels are random, not derived from the codes
    groups = {group for code in codes for group in code.split("-")}
    assert all(len(group) == 4 for group in groups)
    assert [group for group in groups if group in listing] == []


def test_database_keeps_only_the_hash_of_codes(app, instance, client, runner):
    """Neither the database file nor its WAL holds a code in any form, only
    SHA256 of the normalized code (what ``vouchers.available`` looks up)."""
    codes = create_vouchers(runner, 4, count=3)
    assert issue(client, codes[0].lower(), 1)[0].status_code == 200
    with app.app_context():
        stored_hashes = {row[0] for row in db.get_db().conn.execute(
            "SELECT code_hash FROM vouchers")}
    files = sorted(instance.glob("keyserver.sqlite*"))
    assert {f.name for f in files} >= {"keyserver.sqlite", "keyserver.sqlite-wal"}
    stored = b"".join(f.read_bytes() for f in files)
    for code in codes:
        normalized = typed_base32(code)
        assert normalized == code.upper().replace("-", "")
        assert sha256(normalized.encode()) in stored_hashes
        assert sha256(normalized.encode()) in stored
        for text in (code, code.upper(), code.lower(), code.replace("-", ""),
                     code.replace("-", "").lower()):
            for form in (text.encode(), text.encode("utf-16-le")):
                assert form not in stored, form


def test_server_state_cannot_link_issuance_to_redemption(app, instance, client, runner, users):
    """After issuing (and spending one), nothing the server stores equals any token
    input or finalized signature, in raw bytes or in any encoding the server uses."""
    [code] = create_vouchers(runner, 4)
    response, pending, public = issue(client, code, 4)
    tokens = finalize_tokens(public, pending, [b64decode(s) for s in response.json["blind_sigs"]])
    message, _, _ = users.create_message("alice@example.org")
    assert users.put("alice@example.org", message, token=tokens[0].to_bytes()).status_code == 201
    with app.app_context():
        database = db.get_db()
        database.conn.execute("PRAGMA wal_checkpoint(FULL)")
        dump = "\n".join(database.conn.iterdump()).encode()
    stored = dump + b"".join(
        Path(root, name).read_bytes() for root, _, files in os.walk(instance) for name in files)
    for token in tokens:
        for secret in (token.token_input, token.authenticator, token.nonce):
            for form in (secret, secret.hex().encode(), secret.hex().upper().encode(),
                         b64encode(secret).encode(), b64url_encode(secret).encode()):
                assert form not in stored
    # what it does keep is the blinded form, which is useless for linking
    assert remaining(app) == [0]

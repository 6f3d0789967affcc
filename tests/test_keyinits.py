"""The KeyInit repository (§9) through the Flask app: AddKeyInit's rules at their
boundaries, FetchKeyInit's choice and consumption, FlushKeyInit, the purge command,
the fetch rate limits, and what a sender gets out of a fetched KeyInit."""

import contextlib
import copy
import random
import sqlite3

import nacl.bindings
import nacl.signing
import pytest

from client.protocol.encoding import b64encode, b64url_encode, canonical_json, sha256
from client.protocol.keyinit import (STATUS, build_keyinit, build_session_anchor, open_keyinit,
                                     sigkeyhash, sign_flush, sign_owner_request)
from client.protocol.keys import X25519, KeyEntry, ed25519_entry
from client.protocol.signedjson import verify_signed_json
from client.protocol.tokens import format_authorization
from conftest import DAY_MS, UserActions, at, mint
from keyserver import create_app
from keyserver.http import keyinits
from keyserver.http.context import current_key
from keyserver.storage import db

T0 = 1_800_000_000_000
HOUR_MS = 3600 * 1000
MAX_LIFETIME = 30 * DAY_MS
REPO = "http://127.0.0.1:5000"      # the test instance's BASE_URL
PFKEY = KeyEntry(X25519, nacl.bindings.crypto_scalarmult_base(bytes(range(2, 34))))
ANCHOR = build_session_anchor([PFKEY], nymaddress="nym-alice")


def make(account, msgcount, *, not_before_ts=T0, not_after_ts=T0 + DAY_MS, fallback=False,
         repouri=REPO, key=None) -> dict:
    return build_keyinit(key or account.sigkey, msgcount=msgcount, not_before_ts=not_before_ts,
                         not_after_ts=not_after_ts, fallback=fallback, repouri=repouri,
                         anchor=ANCHOR)


def skh(account) -> bytes:
    return sigkeyhash(bytes(account.sigkey.verify_key))


class KeyInitActions:
    """AddKeyInit / FetchKeyInit / FlushKeyInit through a Flask test client."""

    def __init__(self, client):
        self.client = client

    def add(self, account, items, *, sigkey=None, token="mint"):
        headers = {}
        if token == "mint":
            token = mint(self.client.application)
        if token is not None:
            headers["Authorization"] = format_authorization(token)
        entry = sigkey or ed25519_entry(account.sigkey)
        return self.client.post("/v1/keyinits", headers=headers,
                                json={"sigkey": entry.to_json(), "keyinits": items})

    def added(self, account, items):
        response = self.add(account, items)
        assert response.status_code == 200, response.json
        return response.json

    def fetch(self, key_hash, **kwargs):
        path = key_hash if isinstance(key_hash, str) else b64url_encode(key_hash)
        return self.client.post(f"/v1/keyinits/{path}/fetch", **kwargs)

    def fetched(self, account) -> dict:
        response = self.fetch(skh(account))
        assert response.status_code == 200, response.json
        return response.json["keyinit"]

    def status(self, account, ts, *, repouri=REPO, key=None):
        body = sign_owner_request(STATUS, key or account.sigkey, repouri, skh(account), ts)
        return self.client.post(f"/v1/keyinits/{b64url_encode(skh(account))}/status",
                                json=body)

    def flush(self, account, ts, *, repouri=REPO, key=None, key_hash=None):
        key_hash = key_hash or skh(account)
        body = sign_flush(key or account.sigkey, repouri, key_hash, ts)
        return self.client.post(f"/v1/keyinits/{b64url_encode(key_hash)}/flush", json=body)


@pytest.fixture
def kis(client):
    return KeyInitActions(client)


@pytest.fixture
def alice(users):
    with at(T0):
        return users.register("alice@example.org")


def counts(app):
    """Everything a refused request must leave untouched."""
    with app.app_context():
        conn = db.get_db().conn
        return (conn.execute("SELECT count(*) FROM keyinits").fetchone()[0],
                conn.execute("SELECT * FROM keyinit_state ORDER BY sigkeyhash").fetchall(),
                conn.execute("SELECT count(*) FROM spent_tokens").fetchone()[0])


def stored_msgcounts(app, key_hash) -> list[int]:
    with app.app_context():
        return [row[0] for row in db.get_db().conn.execute(
            "SELECT msgcount FROM keyinits WHERE sigkeyhash = ? ORDER BY msgcount", (key_hash,))]


def refused(app, status, errcode, send, *args, **kwargs):
    """Call ``send(*args, **kwargs)`` and check it answers the error and changes nothing."""
    before = counts(app)
    response = send(*args, **kwargs)
    assert (response.status_code, response.json["errcode"]) == (status, errcode), response.json
    assert response.json["error"]
    assert counts(app) == before
    return response


def added_within_validity(app, kis, account, item, ok):
    """Add ``item`` now: stored if ``ok``, else refused as ``INVALID_VALIDITY``."""
    with at(NOW):
        if ok:
            kis.added(account, [item])
        else:
            refused(app, 400, "INVALID_VALIDITY", kis.add, account, [item])


# --- adding ---------------------------------------------------------------------------------

def test_add_answers_a_signed_receipt_naming_what_was_stored(app, kis, alice):
    items = [make(alice, n, fallback=n == 3) for n in (1, 2, 3)]
    with at(T0):
        receipt = kis.added(alice, items)
    with app.app_context():
        key = current_key()
        rows = db.get_db().conn.execute(
            "SELECT msgcount, fallback, keyinit FROM keyinits ORDER BY id").fetchall()
    verify_signed_json(receipt, "example.org", key.key_id, bytes(key.signing_key.verify_key))
    assert receipt["sigkeyhash"] == b64encode(skh(alice)) and receipt["ts"] == T0
    assert receipt["keyinit_hashes"] == [b64encode(sha256(canonical_json(k))) for k in items]
    assert rows == [(1, 0, canonical_json(items[0]).decode()),
                    (2, 0, canonical_json(items[1]).decode()),
                    (3, 1, canonical_json(items[2]).decode())]
    assert counts(app)[2] == 2      # alice's registration and this add: one token each


NOW = T0 + 1000
IDENTITY_SHORT = T0 + 10 * DAY_MS   # an identity that expires before NOW + MAX_LIFETIME


@pytest.mark.parametrize("identity_not_after, not_after, ok", [
    (None, NOW, False),                             # not after now: expired on arrival
    (None, NOW + 1, True),
    (None, NOW + MAX_LIFETIME, True),               # exactly the longest lifetime
    (None, NOW + MAX_LIFETIME + 1, False),
    (IDENTITY_SHORT, IDENTITY_SHORT, True),         # exactly the identity's expiry
    (IDENTITY_SHORT, IDENTITY_SHORT + 1, False),
])
def test_add_validity_boundaries(app, users, kis, identity_not_after, not_after, ok):
    with at(T0):
        account = users.register("alice@example.org", not_after_ts=identity_not_after)
    added_within_validity(app, kis, account,
                          make(account, 1, not_before_ts=T0, not_after_ts=not_after), ok)


@pytest.mark.parametrize("not_before", [NOW + DAY_MS, NOW + DAY_MS + 1])
def test_add_not_before_must_precede_not_after(app, kis, alice, not_before):
    item = make(alice, 1, not_before_ts=not_before, not_after_ts=NOW + DAY_MS)
    with at(NOW):
        refused(app, 400, "INVALID_VALIDITY", kis.add, alice, [item])


def test_add_batch_size_boundaries(app, kis, alice):
    with at(T0):
        refused(app, 400, "INVALID_MESSAGE", kis.add, alice, [])
        refused(app, 400, "INVALID_MESSAGE", kis.add, alice,
                [make(alice, n) for n in range(1, 52)])
        kis.added(alice, [make(alice, n) for n in range(1, 51)])
    assert stored_msgcounts(app, skh(alice)) == list(range(1, 51))


def test_add_per_identity_limit(app, kis, alice):
    with at(T0):
        kis.added(alice, [make(alice, n) for n in range(1, 51)])
        kis.added(alice, [make(alice, n, not_after_ts=T0 + HOUR_MS) for n in range(51, 101)])
        response = refused(app, 409, "KEYINIT_LIMIT", kis.add, alice, [make(alice, 101)])
        assert "100 KeyInits are stored" in response.json["error"]
        kis.fetched(alice)                              # consumes one: room for one
        refused(app, 409, "KEYINIT_LIMIT", kis.add, alice, [make(alice, 101), make(alice, 102)])
        kis.added(alice, [make(alice, 101)])
    with at(T0 + HOUR_MS):
        # Expired KeyInits do not count: the 49 left of the second batch are purged.
        kis.added(alice, [make(alice, n, not_after_ts=T0 + 2 * HOUR_MS) for n in range(102, 151)])
    assert len(stored_msgcounts(app, skh(alice))) == 100


def test_add_other_identities_do_not_count(app, users, kis, alice):
    with at(T0):
        bob = users.register("bob@example.org")
        kis.added(alice, [make(alice, n) for n in range(1, 51)])
        kis.added(alice, [make(alice, n) for n in range(51, 101)])
        kis.added(bob, [make(bob, 1)])


def test_msgcount_can_never_be_replayed(app, client, kis, alice, runner):
    with at(T0):
        kis.added(alice, [make(alice, 1), make(alice, 2, not_after_ts=T0 + 10)])
        consumed = kis.fetched(alice)
        assert consumed["contents"]["msgcount"] == 2      # expires first
        for msgcount in (1, 2):                           # stored, consumed
            refused(app, 409, "MSGCOUNT_MISMATCH", kis.add, alice, [make(alice, msgcount)])
        kis.added(alice, [make(alice, 5, not_after_ts=T0 + 20)])   # gaps are allowed
    with at(T0 + 20):
        assert runner.invoke(args=["keyinits", "purge"]).output == "purged 1 expired KeyInit(s)\n"
        refused(app, 409, "MSGCOUNT_MISMATCH", kis.add, alice,
                [make(alice, 5, not_after_ts=T0 + DAY_MS)])
        assert kis.flush(alice, T0 + 20).json == {"flushed": 1}
        refused(app, 409, "MSGCOUNT_MISMATCH", kis.add, alice, [make(alice, 3), make(alice, 6)])
        kis.added(alice, [make(alice, 6)])


@pytest.mark.parametrize("stored, racer, ours, errcode", [
    ([], [1, 2], [1, 2], "MSGCOUNT_MISMATCH"),                 # never stored twice
    (range(1, 51), range(51, 101), [101], "KEYINIT_LIMIT"),    # never over the limit
], ids=["same-msgcounts", "limit"])
def test_a_batch_raced_by_another_is_judged_inside_the_lock(app, kis, alice, monkeypatch,
                                                            stored, racer, ours, errcode):
    """The batch is judged outside the write lock against the state then, and again
    inside when a racing add changed it (keyserver.service.twophase). Without the
    re-check the race would store replayed msgcounts, or more than the limit."""
    real_write = keyinits.write

    def other_batch_first(job):
        monkeypatch.setattr(keyinits, "write", real_write)
        kis.added(alice, [make(alice, n) for n in racer])
        return real_write(job)

    with at(T0):
        if stored:
            kis.added(alice, [make(alice, n) for n in stored])
        monkeypatch.setattr(keyinits, "write", other_batch_first)
        response = kis.add(alice, [make(alice, n) for n in ours])
    assert (response.status_code, response.json["errcode"]) == (409, errcode), response.json
    assert stored_msgcounts(app, skh(alice)) == [*stored, *racer]


def test_msgcount_must_increase_within_a_batch(app, kis, alice):
    with at(T0):
        refused(app, 400, "INVALID_MESSAGE", kis.add, alice, [make(alice, 2), make(alice, 2)])
        refused(app, 400, "INVALID_MESSAGE", kis.add, alice, [make(alice, 3), make(alice, 2)])


def test_wrong_repouri(app, kis, alice):
    with at(T0):
        response = refused(app, 400, "INVALID_MESSAGE", kis.add, alice,
                           [make(alice, 1, repouri=REPO + "/")])
    assert "repouri" in response.json["error"]


OTHER_REPO = "https://keys.example.org"


@pytest.fixture
def two_repos(instance):
    """An app whose KeyInit repository has two URIs, and KeyInit actions on it."""
    app = create_app({"TESTING": True, "KEYINIT_REPOSITORY_URIS": [REPO, OTHER_REPO]},
                     instance_path=str(instance))
    return app, KeyInitActions(app.test_client())


def test_repouri_may_be_any_of_the_servers(two_repos):
    app, kis = two_repos
    other = OTHER_REPO
    with at(T0):
        account = UserActions(app.test_client()).register("alice@example.org")
        kis.added(account, [make(account, 1, repouri=other), make(account, 2, repouri=REPO)])


def test_wrong_sigkeyhash(app, users, kis, alice):
    with at(T0):
        bob = users.register("bob@example.org")
        # bob's KeyInit, sent under alice's sigkey
        response = refused(app, 400, "INVALID_MESSAGE", kis.add, alice,
                           [make(alice, 1), make(bob, 2)])
    assert "keyinits[1].contents.sigkeyhash" in response.json["error"]


def test_bad_signature(app, kis, alice):
    other = nacl.signing.SigningKey.generate()
    forged = make(alice, 2)
    forged["signature"] = b64encode(other.sign(canonical_json(forged["contents"])).signature)
    tampered = make(alice, 3)
    tampered["contents"]["fallback"] = True
    with at(T0):
        for item in (forged, tampered):
            refused(app, 400, "INVALID_SIGNATURE", kis.add, alice, [make(alice, 1), item])


def test_one_bad_item_stores_nothing_and_spends_nothing(app, kis, alice):
    items = [make(alice, n) for n in range(1, 6)]
    items[3] = make(alice, 4, not_after_ts=T0 + MAX_LIFETIME + 1)
    with at(T0):
        refused(app, 400, "INVALID_VALIDITY", kis.add, alice, items)
        items[3] = make(alice, 4)
        kis.added(alice, items)                     # the msgcounts were not used up
    assert stored_msgcounts(app, skh(alice)) == [1, 2, 3, 4, 5]


def test_unknown_sigkey(app, kis, alice):
    stranger = nacl.signing.SigningKey.generate()
    item = build_keyinit(stranger, msgcount=1, not_before_ts=T0, not_after_ts=T0 + DAY_MS,
                         fallback=False, repouri=REPO, anchor=ANCHOR)
    with at(T0):
        refused(app, 404, "NOT_FOUND", kis.add, alice, [item], sigkey=ed25519_entry(stranger))


def test_sigkey_of_identity_not_current(app, users, kis):
    with at(T0):
        alice = users.register("alice@example.org", not_after_ts=T0 + DAY_MS)
        later = users.register("bob@example.org", not_before_ts=T0 + 1)
    with at(T0 + DAY_MS - 1):
        kis.added(alice, [make(alice, 1, not_after_ts=T0 + DAY_MS)])
    with at(T0 + DAY_MS):                           # alice expired at this very ms
        refused(app, 404, "NOT_FOUND", kis.add, alice,
                [make(alice, 2, not_after_ts=T0 + 2 * DAY_MS)])
    with at(T0):                                    # bob is not valid yet
        refused(app, 404, "NOT_FOUND", kis.add, later, [make(later, 1)])


def test_replaced_sigkey(app, users, kis, alice):
    with at(T0):
        updated = users.update(alice)
        refused(app, 404, "NOT_FOUND", kis.add, alice, [make(alice, 1)])
        kis.added(updated, [make(updated, 1)])


def test_token_is_checked_after_the_shape_and_before_the_state(app, kis, alice):
    stranger = nacl.signing.SigningKey.generate()
    item = build_keyinit(stranger, msgcount=1, not_before_ts=T0, not_after_ts=T0 + DAY_MS,
                         fallback=False, repouri=REPO, anchor=ANCHOR)
    with at(T0):
        refused(app, 400, "INVALID_MESSAGE", kis.add, alice, [], token=None)
        refused(app, 401, "TOKEN_REQUIRED", kis.add, alice, [item],
                sigkey=ed25519_entry(stranger), token=None)
        refused(app, 401, "TOKEN_REQUIRED", kis.add, alice, [make(alice, 1)], token=None)
        token = mint(app)
        assert kis.add(alice, [make(alice, 1)], token=token).status_code == 200
        refused(app, 401, "TOKEN_SPENT", kis.add, alice, [make(alice, 2)], token=token)


def test_no_signature_is_checked_for_an_add_without_a_valid_token(monkeypatch, app, kis,
                                                                   alice):
    """The shape is checked, then an absent token refuses the batch before the
    signatures (the costly part) are verified; with a token they are."""
    from client.protocol import keyinit

    verified = []
    real = keyinit.verify_detached
    monkeypatch.setattr(keyinit, "verify_detached",
                        lambda *args: verified.append(args) or real(*args))
    batch = [make(alice, n) for n in range(1, 51)]
    with at(T0):
        refused(app, 401, "TOKEN_REQUIRED", kis.add, alice, batch, token=None)
        assert verified == []
        kis.added(alice, batch)
    assert len(verified) == 50


@pytest.mark.parametrize("mangle, errcode", [
    (lambda body: b"not json", "BAD_REQUEST"),
    (lambda body: b'{"sigkey": 1, "sigkey": 2}', "BAD_REQUEST"),
    (lambda body: b"[]", "BAD_REQUEST"),
    (lambda body: {"keyinits": body["keyinits"]}, "INVALID_MESSAGE"),
    (lambda body: {**body, "extra": 1}, "INVALID_MESSAGE"),
    (lambda body: {**body, "keyinits": "all"}, "INVALID_MESSAGE"),
    (lambda body: {**body, "keyinits": [1]}, "INVALID_MESSAGE"),
    (lambda body: {**body, "sigkey": {**body["sigkey"], "function": "x25519"}},
     "INVALID_MESSAGE"),
    (lambda body: {**body, "sigkey": {**body["sigkey"], "pubkey": "AAAA"}}, "INVALID_MESSAGE"),
    (lambda body: _with_contents(body, msgcount=1.0), "INVALID_MESSAGE"),
    (lambda body: _with_contents(body, msgcount=True), "INVALID_MESSAGE"),
    (lambda body: _with_contents(body, msgcount=2**53), "INVALID_MESSAGE"),
    (lambda body: _with_contents(body, fallback=0), "INVALID_MESSAGE"),
    (lambda body: _with_contents(body, version="2"), "INVALID_MESSAGE"),
    (lambda body: _with_contents(body, sessionanchorhash="AAAA"), "INVALID_MESSAGE"),
])
def test_malformed_add_requests(app, client, alice, mangle, errcode):
    body = {"sigkey": ed25519_entry(alice.sigkey).to_json(), "keyinits": [make(alice, 1)]}
    mangled = mangle(copy.deepcopy(body))
    headers = {"Authorization": format_authorization(mint(app)),
               "Content-Type": "application/json"}
    with at(T0):
        refused(app, 400, errcode, client.post, "/v1/keyinits", headers=headers,
                **{"data" if isinstance(mangled, bytes) else "json": mangled})


def _with_contents(body, **changes):
    body["keyinits"][0]["contents"].update(changes)
    return body


# --- fetching -------------------------------------------------------------------------------

def test_fetch_hands_out_non_fallback_by_earliest_expiry_and_deletes_them(app, kis, alice):
    with at(T0):
        kis.added(alice, [make(alice, 1, not_after_ts=T0 + 3 * HOUR_MS),
                          make(alice, 2, not_after_ts=T0 + HOUR_MS, fallback=True),
                          make(alice, 3, not_after_ts=T0 + HOUR_MS),
                          make(alice, 4, not_after_ts=T0 + 2 * HOUR_MS),
                          make(alice, 5, not_after_ts=T0 + HOUR_MS)])
        order = [kis.fetched(alice)["contents"]["msgcount"] for _ in range(4)]
        assert order == [3, 5, 4, 1]         # same expiry: the one stored first
        assert stored_msgcounts(app, skh(alice)) == [2]
        # Only the fallback one is left: handed out again and again, never deleted.
        assert {kis.fetched(alice)["contents"]["msgcount"] for _ in range(5)} == {2}
    assert stored_msgcounts(app, skh(alice)) == [2]


def test_fetch_returns_the_keyinit_as_uploaded_and_the_sender_can_open_it(kis, alice):
    item = make(alice, 7)
    with at(T0):
        kis.added(alice, [item])
        response = kis.fetch(skh(alice))
    assert response.mimetype == "application/json"
    assert response.get_data() == canonical_json({"keyinit": item}) + b"\n"
    fetched = response.json["keyinit"]
    with at(T0 + 1):
        anchor = open_keyinit(fetched, sigkey=ed25519_entry(alice.sigkey), now_ms=T0 + 1,
                              repouri=REPO)
    assert anchor.pfkeys == (PFKEY,) and anchor.nymaddress == "nym-alice"


def test_fetch_never_returns_not_yet_valid_keyinits(app, kis, alice):
    with at(T0):
        kis.added(alice, [make(alice, 1, not_before_ts=T0 + 500, not_after_ts=T0 + 600),
                          make(alice, 2, not_before_ts=T0, not_after_ts=T0 + DAY_MS)])
    with at(T0 + 499):
        assert kis.fetched(alice)["contents"]["msgcount"] == 2   # 1 would expire first
        assert kis.fetch(skh(alice)).json["errcode"] == "NO_KEYINIT"
    with at(T0 + 500):
        assert kis.fetched(alice)["contents"]["msgcount"] == 1   # valid from this ms


def test_fetch_never_returns_expired_keyinits_and_purges_them(app, kis, alice):
    with at(T0):
        kis.added(alice, [make(alice, 1, not_after_ts=T0 + 700, fallback=True),
                          make(alice, 2, not_after_ts=T0 + 700),
                          make(alice, 3, not_after_ts=T0 + DAY_MS, fallback=True)])
    with at(T0 + 699):
        assert kis.fetched(alice)["contents"]["msgcount"] == 2
    with at(T0 + 700):                       # 1 expires at this very ms
        assert {kis.fetched(alice)["contents"]["msgcount"] for _ in range(5)} == {3}
        assert stored_msgcounts(app, skh(alice)) == [3]
    with at(T0 + DAY_MS):
        response = kis.fetch(skh(alice))
        assert (response.status_code, response.json["errcode"]) == (404, "NO_KEYINIT")
    assert stored_msgcounts(app, skh(alice)) == []


def test_fetch_unknown_sigkeyhash(kis):
    response = kis.fetch(bytes(32))
    assert (response.status_code, response.json["errcode"]) == (404, "NO_KEYINIT")


@pytest.mark.parametrize("path", [
    "abc",
    b64url_encode(bytes(31)),
    b64url_encode(bytes(33)),
    b64url_encode(bytes(32)) + "=",
    "A" * 42 + "B",                  # 43 characters, but the last one has stray bits
    "+" + "A" * 42,                  # standard alphabet
])
def test_fetch_malformed_sigkeyhash(kis, path):
    for response in (kis.fetch(path), kis.client.post(f"/v1/keyinits/{path}/flush", json={})):
        assert (response.status_code, response.json["errcode"]) == (400, "BAD_REQUEST")


def test_keyinits_of_a_replaced_sigkey_are_no_longer_served(app, users, kis, alice):
    with at(T0):
        kis.added(alice, [make(alice, 1), make(alice, 2, fallback=True)])
        kept = users.update(alice, new_sigkey=alice.sigkey)     # same sigkey: kept
        assert stored_msgcounts(app, skh(alice)) == [1, 2]
        updated = users.update(kept)
        assert stored_msgcounts(app, skh(alice)) == []
        response = kis.fetch(skh(alice))
        assert (response.status_code, response.json["errcode"]) == (404, "NO_KEYINIT")
        assert kis.flush(alice, T0).json["errcode"] == "NOT_FOUND"
        kis.added(updated, [make(updated, 1)])
        assert kis.fetched(updated)["contents"]["sigkeyhash"] == b64encode(skh(updated))


def test_keyinits_of_a_reclaimed_identity_are_dropped(app, users, kis):
    grace = app.config["RECLAIM_GRACE"]
    with at(T0):
        alice = users.register("alice@example.org", not_after_ts=T0 + DAY_MS)
        kis.added(alice, [make(alice, 1)])
    with at(T0 + DAY_MS + grace + 1):
        users.register("alice@example.org")
    assert stored_msgcounts(app, skh(alice)) == []


def test_fallback_bias_through_the_endpoint(app, kis, alice):
    """The short-lived fallback is handed out about 10/11 of the time (weight 1/n)."""
    with at(T0):
        kis.added(alice, [make(alice, 1, not_after_ts=T0 + 10 * HOUR_MS, fallback=True),
                          make(alice, 2, not_after_ts=T0 + HOUR_MS, fallback=True)])
    with app.app_context():
        conn = db.get_db().conn
        rows = conn.execute("SELECT * FROM keyinits").fetchall()
    app.extensions[keyinits.RNG] = random.Random(20261122)
    draws = 300
    short = 0
    with at(T0):
        for _ in range(draws):
            short += kis.fetched(alice)["contents"]["msgcount"] == 2
            with app.app_context():      # undo a deletion: each draw sees both again
                conn = db.get_db().conn     # (and is the first fetch of the minute)
                conn.execute("DELETE FROM keyinit_fetches")
                conn.execute("DELETE FROM keyinits")
                conn.executemany("INSERT INTO keyinits VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    assert 0.85 < short / draws < 0.96, short          # a uniform choice would give 0.5


def test_fallback_deletion_through_the_endpoint(app, kis, alice):
    with at(T0):
        kis.added(alice, [make(alice, 1, not_after_ts=T0 + 10 * HOUR_MS, fallback=True),
                          make(alice, 2, not_after_ts=T0 + HOUR_MS, fallback=True)])
    app.extensions[keyinits.RNG] = random.Random(3)
    with at(T0):
        handed = [kis.fetched(alice)["contents"]["msgcount"] for _ in range(20)]
    # The short one goes after being handed out (r > n), the long one is kept.
    assert 2 in handed and handed[-1] == 1
    assert stored_msgcounts(app, skh(alice)) == [1]


# --- rate limits ----------------------------------------------------------------------------

def limited_app(instance, **limits):
    return create_app({"TESTING": True, **limits}, instance_path=str(instance))


def test_fetch_rate_per_sigkeyhash(instance):
    app = limited_app(instance, KEYINIT_FETCH_RATE_PER_SIGKEYHASH=3)
    kis = KeyInitActions(app.test_client())
    with at(T0):
        alice = UserActions(app.test_client()).register("alice@example.org")
        kis.added(alice, [make(alice, 1, fallback=True)])
        assert [kis.fetch(skh(alice)).status_code for _ in range(3)] == [200] * 3
        response = kis.fetch(skh(alice), environ_base={"REMOTE_ADDR": "192.0.2.7"})
        assert (response.status_code, response.json["errcode"]) == (429, "RATE_LIMITED")
        assert response.headers["Retry-After"] == "60"
        assert kis.fetch(bytes(32)).json["errcode"] == "NO_KEYINIT"    # another sigkeyhash
    with at(T0 + 59_999):
        assert kis.fetch(skh(alice)).status_code == 429
    with at(T0 + 60_000):
        assert kis.fetch(skh(alice)).status_code == 200


def test_fetch_rate_per_address(instance):
    app = limited_app(instance, KEYINIT_FETCH_RATE_PER_ADDRESS=2)
    kis = KeyInitActions(app.test_client())
    with at(T0):
        assert [kis.fetch(bytes([n]) * 32).status_code for n in range(2)] == [404, 404]
        response = kis.fetch(bytes([2]) * 32)
        assert (response.status_code, response.json["errcode"]) == (429, "RATE_LIMITED")
        other = kis.fetch(bytes([2]) * 32, environ_base={"REMOTE_ADDR": "192.0.2.7"})
        assert other.json["errcode"] == "NO_KEYINIT"


def test_fetch_rate_per_address_ignores_x_forwarded_for_without_trusted_proxies(instance):
    """By default the TCP peer is the client: a client that sends X-Forwarded-For
    cannot escape its limit by naming another address each time."""
    app = limited_app(instance, KEYINIT_FETCH_RATE_PER_ADDRESS=2)
    kis = KeyInitActions(app.test_client())
    with at(T0):
        statuses = [kis.fetch(bytes([n]) * 32, environ_base={"REMOTE_ADDR": "127.0.0.1"},
                              headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code
                    for n in range(3)]
    assert statuses == [404, 404, 429]


def test_fetch_rate_per_address_behind_a_trusted_proxy(instance):
    """Behind a trusted proxy every client comes from the proxy's address: the limit
    is counted per X-Forwarded-For address, not for all of them together."""
    app = limited_app(instance, KEYINIT_FETCH_RATE_PER_ADDRESS=2, TRUSTED_PROXIES=["127.0.0.1"])
    kis = KeyInitActions(app.test_client())

    def fetch(n, client, peer="127.0.0.1"):
        return kis.fetch(bytes([n]) * 32, environ_base={"REMOTE_ADDR": peer},
                         headers={"X-Forwarded-For": client}).status_code

    with at(T0):
        assert [fetch(n, "198.51.100.1") for n in range(3)] == [404, 404, 429]
        # Another client through the same proxy has its own count ...
        assert [fetch(n, "198.51.100.2") for n in range(3)] == [404, 404, 429]
        # ... a forged entry left of the proxy's does not help ...
        assert fetch(9, "203.0.113.5, 198.51.100.1") == 429
        # ... and a peer that is not a trusted proxy is counted as itself.
        assert [fetch(n, "198.51.100.3", peer="192.0.2.9") for n in range(3)] == [404, 404, 429]
        assert fetch(9, "198.51.100.4", peer="192.0.2.9") == 429


def test_fetches_are_unlimited_with_limits_0(instance):
    app = limited_app(instance, KEYINIT_FETCH_RATE_PER_ADDRESS=0,
                      KEYINIT_FETCH_RATE_PER_SIGKEYHASH=0)
    kis = KeyInitActions(app.test_client())
    with at(T0):
        alice = UserActions(app.test_client()).register("alice@example.org")
        kis.added(alice, [make(alice, 1, fallback=True)])
        assert {kis.fetch(skh(alice)).status_code for _ in range(100)} == {200}
    assert fetch_events(app) == 0                  # nothing is recorded for a limit that is off


def test_fetches_are_limited_by_default(kis, alice, app):
    """30 a minute per sigkeyhash, 60 per address (docs/decisions.md)."""
    with at(T0):
        kis.added(alice, [make(alice, 1, fallback=True)])
        assert {kis.fetch(skh(alice)).status_code for _ in range(30)} == {200}
        assert kis.fetch(skh(alice)).status_code == 429
        assert [kis.fetch(bytes([n]) * 32).status_code for n in range(30)] == [404] * 30
        response = kis.fetch(bytes(32))
        assert (response.status_code, response.json["errcode"]) == (429, "RATE_LIMITED")
        assert "60 KeyInit fetches a minute from your address" in response.json["error"]


def test_old_fetches_are_forgotten(kis, alice, app):
    with at(T0):
        kis.added(alice, [make(alice, 1, fallback=True)])
        for _ in range(5):
            kis.fetch(skh(alice))
    assert fetch_events(app) == 10                 # per address and per sigkeyhash
    with at(T0 + 60_000):
        assert kis.fetch(skh(alice)).status_code == 200
    assert fetch_events(app) == 2                  # only the last minute's are kept


def test_an_older_instance_gets_the_fetch_table(instance):
    """An instance made before the shared limits has no ``keyinit_fetches``: the first
    process to open it adds it, so a fetch is answered, not a 500."""
    with contextlib.closing(sqlite3.connect(instance / "keyserver.sqlite")) as conn, conn:
        conn.execute("DROP TABLE keyinit_fetches")
    app = create_app({"TESTING": True}, instance_path=str(instance))
    response = KeyInitActions(app.test_client()).fetch(bytes(32))
    assert (response.status_code, response.json["errcode"]) == (404, "NO_KEYINIT")
    assert fetch_events(app) == 2


def fetch_events(app) -> int:
    with app.app_context():
        return db.get_db().conn.execute("SELECT count(*) FROM keyinit_fetches").fetchone()[0]


# --- configured add limits ------------------------------------------------------------------

CONFIGURED = {"MAX_KEYINITS_PER_REQUEST": 3, "MAX_KEYINITS_PER_IDENTITY": 5,
              "MAX_KEYINIT_LIFETIME": 2 * DAY_MS}


@pytest.fixture
def configured(instance):
    """An app with non-default AddKeyInit limits, its KeyInit actions, and alice on it."""
    app = limited_app(instance, **CONFIGURED)
    with at(T0):
        account = UserActions(app.test_client()).register("alice@example.org")
    return app, KeyInitActions(app.test_client()), account


def test_configured_limits_are_published(configured):
    app, kis, _ = configured
    limits = kis.client.get("/v1/capabilities").json["limits"]
    assert (limits["max_keyinits_per_request"], limits["max_keyinits_per_identity"],
            limits["max_keyinit_lifetime_ms"]) == (3, 5, 2 * DAY_MS)


def test_configured_batch_size_is_enforced(configured):
    app, kis, alice = configured
    with at(T0):
        response = refused(app, 400, "INVALID_MESSAGE", kis.add, alice,
                           [make(alice, n) for n in range(1, 5)])
        assert "1 to 3 KeyInits" in response.json["error"]
        kis.added(alice, [make(alice, n) for n in range(1, 4)])
    assert stored_msgcounts(app, skh(alice)) == [1, 2, 3]


def test_configured_per_identity_limit_is_enforced(configured):
    app, kis, alice = configured
    with at(T0):
        kis.added(alice, [make(alice, n) for n in range(1, 4)])
        refused(app, 409, "KEYINIT_LIMIT", kis.add, alice, [make(alice, n) for n in (4, 5, 6)])
        kis.added(alice, [make(alice, 4), make(alice, 5)])          # exactly 5 stored
        response = refused(app, 409, "KEYINIT_LIMIT", kis.add, alice, [make(alice, 6)])
        assert "5 KeyInits are stored" in response.json["error"]
        kis.fetched(alice)                                          # consumes one: room for one
        kis.added(alice, [make(alice, 6)])
        refused(app, 409, "KEYINIT_LIMIT", kis.add, alice, [make(alice, 7)])
    assert stored_msgcounts(app, skh(alice)) == [2, 3, 4, 5, 6]


@pytest.mark.parametrize("not_after, ok", [
    (NOW + 2 * DAY_MS, True),                       # exactly the configured lifetime
    (NOW + 2 * DAY_MS + 1, False),                  # well within the default 30 days
], ids=["exactly", "1ms-more"])
def test_configured_lifetime_is_enforced(configured, not_after, ok):
    app, kis, alice = configured
    added_within_validity(app, kis, alice,
                          make(alice, 1, not_before_ts=T0, not_after_ts=not_after), ok)
    assert stored_msgcounts(app, skh(alice)) == ([1] if ok else [])


# --- flushing -------------------------------------------------------------------------------

def test_flush_deletes_everything_and_cannot_be_replayed(app, kis, alice):
    with at(T0):
        kis.added(alice, [make(alice, 1), make(alice, 2, fallback=True),
                          make(alice, 3, not_after_ts=T0 + 10)])
    with at(T0 + 10):
        response = kis.flush(alice, T0 + 10)
        assert (response.status_code, response.json) == (200, {"flushed": 2})   # 3 expired
        assert stored_msgcounts(app, skh(alice)) == []
        for ts in (T0 + 10, T0 + 9):
            refused(app, 400, "INVALID_VALIDITY", kis.flush, alice, ts)
        assert kis.flush(alice, T0 + 11).json == {"flushed": 0}


@pytest.mark.parametrize("offset, ok", [
    (-5 * 60_000, True), (5 * 60_000, True), (-5 * 60_000 - 1, False), (5 * 60_000 + 1, False),
])
def test_flush_time_window(app, kis, alice, offset, ok):
    with at(T0):
        kis.added(alice, [make(alice, 1)])
    with at(T0 + HOUR_MS):
        if ok:
            assert kis.flush(alice, T0 + HOUR_MS + offset).json == {"flushed": 1}
        else:
            refused(app, 400, "INVALID_VALIDITY", kis.flush, alice, T0 + HOUR_MS + offset)


def test_flush_bad_signatures(app, users, kis, alice):
    with at(T0):
        bob = users.register("bob@example.org")
        kis.added(alice, [make(alice, 1)])
        kis.added(bob, [make(bob, 1)])
        for wrong in ({"key": bob.sigkey}, {"repouri": "https://keys.example.org"}):
            refused(app, 400, "INVALID_SIGNATURE", kis.flush, alice, T0, **wrong)
        # bob's flush signature, sent for alice's sigkeyhash
        body = sign_flush(bob.sigkey, REPO, skh(bob), T0)
        refused(app, 400, "INVALID_SIGNATURE", kis.client.post,
                f"/v1/keyinits/{b64url_encode(skh(alice))}/flush", json=body)
        assert kis.flush(alice, T0).json == {"flushed": 1}
    assert stored_msgcounts(app, skh(bob)) == [1]


def test_flush_names_any_repository_uri_of_the_server(two_repos):
    app, kis = two_repos
    other = OTHER_REPO
    with at(T0):
        alice = UserActions(app.test_client()).register("alice@example.org")
        kis.added(alice, [make(alice, 1), make(alice, 2, repouri=other)])
        assert kis.flush(alice, T0, repouri=other).json == {"flushed": 2}
        assert kis.flush(alice, T0 + 1, repouri="https://elsewhere.example").json[
            "errcode"] == "INVALID_SIGNATURE"


def test_flush_of_unknown_sigkeyhash(app, kis, alice):
    with at(T0):
        # alice is registered but never stored a KeyInit here
        refused(app, 404, "NOT_FOUND", kis.flush, alice, T0)


@pytest.mark.parametrize("body, errcode", [
    (b"not json", "BAD_REQUEST"),
    (b'{"ts": 1, "ts": 2}', "BAD_REQUEST"),
    ({"ts": T0}, "INVALID_MESSAGE"),
    ({"ts": float(T0), "signature": b64encode(bytes(64))}, "INVALID_MESSAGE"),
    ({"ts": T0, "signature": "AAAA"}, "INVALID_MESSAGE"),
    ({"ts": T0, "signature": b64encode(bytes(64)), "x": 1}, "INVALID_MESSAGE"),
])
def test_malformed_flush_requests(app, kis, alice, body, errcode):
    with at(T0):
        kis.added(alice, [make(alice, 1)])
        path = f"/v1/keyinits/{b64url_encode(skh(alice))}/flush"
        refused(app, 400, errcode, kis.client.post, path, content_type="application/json",
                **{"data" if isinstance(body, bytes) else "json": body})


# --- status (our extension: the owner's view) --------------------------------------------

def test_status_counts_what_is_left(app, kis, alice):
    with at(T0):
        assert kis.status(alice, T0).json["errcode"] == "NOT_FOUND"   # none stored yet
        kis.added(alice, [make(alice, 1, not_after_ts=T0 + 10),
                          make(alice, 2, not_before_ts=T0 + 5, not_after_ts=T0 + 30),
                          make(alice, 3, fallback=True, not_after_ts=T0 + 20)])
        response = kis.status(alice, T0)
        assert (response.status_code, response.json) == (
            200, {"stored": 2, "fallback": 1, "expires_first_ts": T0 + 10})
        kis.fetched(alice)
        assert kis.status(alice, T0).json == {"stored": 1, "fallback": 1,
                                              "expires_first_ts": T0 + 20}
    with at(T0 + 20):                    # the fallback expires: not counted, nor its expiry
        assert kis.status(alice, T0 + 20).json == {"stored": 1, "fallback": 0,
                                                   "expires_first_ts": T0 + 30}
    with at(T0 + 30):
        assert kis.status(alice, T0 + 30).json == {"stored": 0, "fallback": 0,
                                                   "expires_first_ts": None}
    assert stored_msgcounts(app, skh(alice)) == [2, 3]   # asking deletes nothing


def test_status_is_only_for_the_owner(app, users, kis, alice):
    with at(T0):
        bob = users.register("bob@example.org")
        kis.added(alice, [make(alice, 1)])
        for wrong in ({"key": bob.sigkey}, {"repouri": "https://keys.example.org"}):
            refused(app, 400, "INVALID_SIGNATURE", kis.status, alice, T0, **wrong)
        flush = sign_flush(alice.sigkey, REPO, skh(alice), T0)      # another action
        refused(app, 400, "INVALID_SIGNATURE", kis.client.post,
                f"/v1/keyinits/{b64url_encode(skh(alice))}/status", json=flush)
        refused(app, 400, "INVALID_MESSAGE", kis.client.post,
                f"/v1/keyinits/{b64url_encode(skh(alice))}/status", json={"ts": T0})
        refused(app, 404, "NOT_FOUND", kis.status, bob, T0)         # never stored any here
        refused(app, 400, "BAD_REQUEST", kis.client.post, "/v1/keyinits/abc/status",
                json=flush)
    with at(T0 + 5 * 60_000 + 1):
        refused(app, 400, "INVALID_VALIDITY", kis.status, alice, T0)
    with at(T0):
        assert kis.status(alice, T0).json["stored"] == 1           # a read: no replay mark
        assert kis.status(alice, T0).json["stored"] == 1


def test_status_of_a_replaced_sigkey(app, users, kis, alice):
    with at(T0):
        kis.added(alice, [make(alice, 1)])
        users.update(alice)
        refused(app, 404, "NOT_FOUND", kis.status, alice, T0)


# --- operator command and capabilities ------------------------------------------------------

def test_purge_command(app, users, kis, alice, runner):
    with at(T0):
        bob = users.register("bob@example.org")
        kis.added(alice, [make(alice, 1, not_after_ts=T0 + 10), make(alice, 2)])
        kis.added(bob, [make(bob, 1, not_after_ts=T0 + 10, fallback=True),
                        make(bob, 2, not_after_ts=T0 + 11)])
    with at(T0 + 10):
        result = runner.invoke(args=["keyinits", "purge"])
    assert result.exit_code == 0 and result.output == "purged 2 expired KeyInit(s)\n"
    assert stored_msgcounts(app, skh(alice)) == [2] and stored_msgcounts(app, skh(bob)) == [2]


def test_capabilities_list_the_keyinit_methods(client):
    methods = client.get("/v1/capabilities").json["methods"]
    assert {"KeyInitRepository.AddKeyInit", "KeyInitRepository.FetchKeyInit",
            "KeyInitRepository.FlushKeyInit"} <= set(methods)

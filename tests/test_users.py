"""CreateUID / UpdateUID (§4) through the Flask app: every accept and reject rule,
at its boundary, and the order of checks (§4.2.1)."""


import nacl.signing
import pytest

from client.protocol.encoding import b64decode, b64encode, b64url_encode, canonical_json, sha256
from client.protocol.hashchain import open_entry
from client.protocol.keys import ed25519_entry
from client.protocol.signedjson import verify_signed_json
from client.protocol.uidmessage import decrypt_uid_message, sign_uid_content
import keyserver.http.users as http_users
from conftest import DAY_MS, Account, at, mint
from keyserver.http.context import current_key
from keyserver.storage import chain, db

T0 = 1_800_000_000_000  # a whole second, so freezegun can hit it exactly
MAX_LIFETIME = 365 * DAY_MS
GRACE = 365 * DAY_MS
#: The test instance's BASE_URL, so its one KeyInit repository (§9).
OWN_REPO = "http://127.0.0.1:5000"


def state(app):
    """Everything a rejected request must leave untouched."""
    with app.app_context():
        conn = db.get_db().conn
        return tuple(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                     for table in ("chain", "uids", "identities", "history", "keyhashes"))


def expect_error(users, app, identity, message, status, errcode, path_identity=None):
    before = state(app)
    response = users.put(identity, message, path_identity)
    assert (response.status_code, response.json["errcode"]) == (status, errcode), response.json
    assert response.json["error"]
    assert state(app) == before
    return response


def resign(message, sigkey, **signers):
    return sign_uid_content(message["content"], sigkey, **signers)


# --- accepted ---------------------------------------------------------------------------

def test_create_returns_signed_reply_of_the_chain_entry(app, client, users):
    account = users.register("alice@example.org")
    reply = account.reply
    with app.app_context():
        key = current_key()
        head = chain.head(db.get_db())
    verify_signed_json(reply, "example.org", key.key_id, bytes(key.signing_key.verify_key))
    entry = b64decode(reply["entry"]["hashchain_entry"])
    assert reply["entry"]["hashchain_pos"] == head.pos == 1 and entry == head.entry
    uid_hash = open_entry(entry, "alice@example.org")
    assert uid_hash == sha256(canonical_json(account.message))
    encrypted = b64decode(reply["entry"]["uid_message_encrypted"])
    assert decrypt_uid_message(encrypted, uid_hash) == account.message
    fetched = client.get(f"/v1/uids/{b64url_encode(encrypted[:32])}")
    assert fetched.status_code == 200 and fetched.json == reply


def test_create_without_escrow(users):
    users.register("bob@example.org", escrow=None)


def test_update_with_old_sigkey_and_recover_with_escrow(users, client):
    account = users.register("alice@example.org")
    updated = users.update(account)
    recovered = users.update(updated, by="escrow")
    assert recovered.reply["entry"]["hashchain_pos"] == 3
    history = client.get("/v1/users/alice@example.org/history").json
    assert [v["entry"]["hashchain_pos"] for v in history["values"]] == [1, 2, 3]
    assert history["next_start"] is None


def test_escrow_key_replaces_itself(users):
    account = users.register("alice@example.org")
    new_escrow = nacl.signing.SigningKey.generate()
    message, _ = users.update_message(account, by="escrow", sigescrow=ed25519_entry(new_escrow))
    assert users.put(account.identity, message).status_code == 200


def test_adding_escrow_later_needs_only_sigkey(users):
    account = users.register("alice@example.org", escrow=None)
    escrow = nacl.signing.SigningKey.generate()
    message, _ = users.update_message(account, sigescrow=ed25519_entry(escrow))
    assert users.put(account.identity, message).status_code == 200


def test_same_sigkey_may_be_kept_on_update(users):
    account = users.register("alice@example.org")
    message, _ = users.update_message(account, new_sigkey=account.sigkey)
    assert users.put(account.identity, message).status_code == 200


# --- malformed ----------------------------------------------------------------------------

def test_body_too_large(app, client):
    response = client.put("/v1/users/alice@example.org",
                          data=b"{" + b" " * app.config["MAX_REQUEST_BYTES"] + b"}",
                          content_type="application/json")
    assert (response.status_code, response.json["errcode"]) == (413, "TOO_LARGE")


def largest_uid_message(nymaddress: bytes = b"") -> dict:
    """A UIDMessage with every bounded field at its maximum (§2, §4): what
    ``UID_BODY_BYTES`` is sized by."""
    import nacl.bindings

    from client.protocol.keys import X25519, KeyEntry
    from client.protocol.uidmessage import build_uid_content

    sigkey, escrow = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    identity = "a" * 64 + "@" + ".".join(["b" * 63, "c" * 63, "d" * 61])
    largest = 2**53 - 1
    content = build_uid_content(
        identity, ed25519_entry(sigkey), msgcount=largest, not_before_ts=largest,
        not_after_ts=largest, lastentry=bytes(32), sigescrow=ed25519_entry(escrow),
        pubkeys=[KeyEntry(X25519, nacl.bindings.crypto_scalarmult_base(bytes([i + 1] * 32)))
                 for i in range(8)],
        repouris=["https://" + "r" * 248] * 4, forwardsec="optional",
        ciphersuites=["\U0001F600" * 64] * 8, mixaddress="m" * 256, nymaddress=nymaddress)
    assert len(identity) == 254
    return sign_uid_content(content, sigkey, previous_sigkey=escrow, escrow_key=escrow)


def test_the_largest_uid_message_fits_the_body_limit(client):
    """The figures of ``UID_BODY_BYTES``'s comment, and a PUT of that message (with a
    nymaddress of 5 KB) is judged on its content, not refused for its size."""
    import json

    from keyserver.http.users import UID_BODY_BYTES

    message = largest_uid_message()
    assert len(json.dumps({"uid_message": message}).encode()) == 9248
    assert len(canonical_json({"uid_message": message})) == 5067
    body = json.dumps({"uid_message": largest_uid_message(bytes(5000))}).encode()
    assert len(body) <= UID_BODY_BYTES
    response = client.put(f"/v1/users/{message['content']['identity']}", data=body,
                          content_type="application/json")
    assert response.status_code == 400 and response.json["errcode"] != "TOO_LARGE"


@pytest.mark.parametrize("body", [b"not json", b'{"uid_message": 1, "uid_message": 2}', b"[]",
                                  b"\xff", b'{"uid_message": ' + b"1" * 4301 + b"}"])
def test_unparseable_body(client, body):
    response = client.put("/v1/users/alice@example.org", data=body,
                          content_type="application/json")
    assert (response.status_code, response.json["errcode"]) == (400, "BAD_REQUEST")


def test_body_with_extra_member(client, users):
    message, _, _ = users.create_message("alice@example.org")
    response = client.put("/v1/users/alice@example.org",
                          json={"uid_message": message, "extra": 1})
    assert response.json["errcode"] == "INVALID_MESSAGE"


@pytest.mark.parametrize("change", [
    lambda c: c.update(version="2"),
    lambda c: c.update(extra=True),
    lambda c: c.update(msgcount=0.0),
    lambda c: c.update(sigescrow=c["sigkey"]),
    lambda c: c.update(mixaddress="mix.example.org"),            # forwardsec strict
    lambda c: c.update(nymaddress=b64encode(b"nym")),
    lambda c: c.update(mixaddress="mix.example.org", preferences={
        "forwardsec": "optional", "ciphersuites": []}),          # not allowed by config
    lambda c: c["sigkey"].update(pubkey=b64encode(bytes(32))),   # small order
])
def test_invalid_message(app, users, change):
    message, sigkey, escrow = users.create_message("alice@example.org")
    change(message["content"])
    expect_error(users, app, "alice@example.org", message, 400, "INVALID_MESSAGE")


def test_allowed_mixaddress_accepted(instance, users):
    from keyserver import create_app
    from conftest import UserActions

    app = create_app({"ALLOWED_MIXADDRESSES": ["mix.example.org"]}, instance_path=str(instance))
    actions = UserActions(app.test_client())
    message, _, _ = actions.create_message(
        "alice@example.org", mixaddress="mix.example.org", nymaddress=b"nym",
        forwardsec="optional")
    assert actions.put("alice@example.org", message).status_code == 201


@pytest.mark.parametrize("repouris", [
    ["https://evil.example"],
    ["http://10.0.0.1:8080"],                                    # an internal address
    [OWN_REPO, "http://127.0.0.1:5001"],                         # one good, one not
    [OWN_REPO + "/"],                                            # compared exactly
])
def test_repouris_must_be_vouched_for(app, client, users, repouris):
    """§9 (revision 2): senders contact what an identity lists, so the server takes only
    its own KeyInit repositories; nothing is written and no token is spent."""
    message, _, _ = users.create_message("alice@example.org", repouris=repouris)
    token = mint(app)
    before = state(app)
    response = users.put("alice@example.org", message, token=token)
    assert (response.status_code, response.json["errcode"]) == (400, "INVALID_MESSAGE")
    assert "not KeyInit repositories of this server" in response.json["error"]
    assert state(app) == before
    vouched, _, _ = users.create_message("alice@example.org", repouris=[OWN_REPO])
    assert users.put("alice@example.org", vouched, token=token).status_code == 201


def test_an_update_to_foreign_repouris_is_refused(app, users):
    account = users.register("alice@example.org", repouris=[OWN_REPO])
    message, _ = users.update_message(account, repouris=["https://evil.example"])
    expect_error(users, app, account.identity, message, 400, "INVALID_MESSAGE")


def test_allowed_repouris_are_vouched_for_too(instance):
    from keyserver import create_app
    from conftest import UserActions

    other = "https://keyinits.example.net"
    app = create_app({"ALLOWED_REPOURIS": [other]}, instance_path=str(instance))
    client = app.test_client()
    assert client.get("/v1/capabilities").json["keyinitrepository_uris"] == [OWN_REPO, other]
    actions = UserActions(client)
    message, _, _ = actions.create_message("alice@example.org", repouris=[other, OWN_REPO])
    assert actions.put("alice@example.org", message).status_code == 201


@pytest.mark.parametrize("identity,path,errcode,status", [
    ("Alice@example.org", "Alice@example.org", "INVALID_IDENTITY", 400),
    ("bob1@example.org", "bob1@example.org", "INVALID_IDENTITY", 400),
    ("alice@example.org", "bob@example.org", "INVALID_IDENTITY", 400),
    ("alice@other.org", "alice@other.org", "DOMAIN_NOT_SERVED", 403),
    ("admin@example.org", "admin@example.org", "RESERVED_IDENTITY", 403),
    ("keyserver@example.org", "keyserver@example.org", "RESERVED_IDENTITY", 403),
])
def test_identity_rules(app, users, identity, path, errcode, status):
    message, _, _ = users.create_message(identity)
    expect_error(users, app, identity, message, status, errcode, path_identity=path)


# --- state ---------------------------------------------------------------------------------

def test_identity_taken(app, users):
    users.register("alice@example.org")
    message, _, _ = users.create_message("alice@example.org")
    expect_error(users, app, "alice@example.org", message, 409, "IDENTITY_TAKEN")


def test_replayed_create_is_taken(app, users):
    account = users.register("alice@example.org")
    expect_error(users, app, "alice@example.org", account.message, 409, "IDENTITY_TAKEN")


def test_update_of_unknown_identity(app, users):
    account = users.register("alice@example.org")
    message, _ = users.update_message(account)
    message["content"]["identity"] = "carol@example.org"
    expect_error(users, app, "carol@example.org", message, 409, "MSGCOUNT_MISMATCH")


def test_replayed_and_skipped_msgcount(app, users):
    account = users.register("alice@example.org")
    updated = users.update(account)
    expect_error(users, app, account.identity, updated.message, 409, "MSGCOUNT_MISMATCH")
    skipping, new_key = users.update_message(updated)
    skipping["content"]["msgcount"] = 3
    skipping = resign(skipping, new_key, previous_sigkey=updated.sigkey)
    expect_error(users, app, account.identity, skipping, 409, "MSGCOUNT_MISMATCH")


def test_sigkey_of_another_identity_is_in_use(app, users):
    alice = users.register("alice@example.org")
    message, _, _ = users.create_message("bob@example.org", sigkey=alice.sigkey)
    expect_error(users, app, "bob@example.org", message, 409, "KEY_IN_USE")
    message, _, _ = users.create_message("bob@example.org", escrow=alice.escrow)
    expect_error(users, app, "bob@example.org", message, 409, "KEY_IN_USE")
    # a key alice no longer uses still belongs to her
    users.update(alice)
    message, _, _ = users.create_message("bob@example.org", sigkey=alice.sigkey)
    expect_error(users, app, "bob@example.org", message, 409, "KEY_IN_USE")


def test_reclaim_grace_boundary(app, users):
    with at(T0):
        alice = users.register("alice@example.org", not_after_ts=T0 + DAY_MS)
    released = T0 + DAY_MS + GRACE
    with at(released):
        message, _, _ = users.create_message("alice@example.org", not_after_ts=released + DAY_MS)
        expect_error(users, app, "alice@example.org", message, 409, "IDENTITY_TAKEN")
    with at(released + 1):
        message, _, _ = users.create_message("alice@example.org",
                                             not_after_ts=released + DAY_MS)
        response = users.put("alice@example.org", message)
        assert response.status_code == 201, response.json
    assert alice.identity == "alice@example.org"


def test_expired_identity_can_still_be_updated_by_its_owner(users):
    with at(T0):
        alice = users.register("alice@example.org", not_after_ts=T0 + DAY_MS)
    with at(T0 + 2 * DAY_MS):
        users.update(alice)


# --- validity ------------------------------------------------------------------------------

@pytest.mark.parametrize("not_before,not_after,ok", [
    (T0 - 1, T0, False),                       # not_after_ts exactly now
    (T0 - 1, T0 + 1, True),
    (T0, T0 + MAX_LIFETIME, True),             # exactly the maximum lifetime
    (T0, T0 + MAX_LIFETIME + 1, False),        # one millisecond more
    (T0 + 5, T0 + 5, False),                   # not_before == not_after
    (T0 + 6, T0 + 5, False),
])
def test_validity_boundaries(app, users, not_before, not_after, ok):
    with at(T0):
        message, _, _ = users.create_message("alice@example.org", not_before_ts=not_before,
                                             not_after_ts=not_after)
        if ok:
            assert users.put("alice@example.org", message).status_code == 201
        else:
            expect_error(users, app, "alice@example.org", message, 400, "INVALID_VALIDITY")


@pytest.mark.parametrize("not_after,ok", [(T0, False), (T0 + 1, True)])
def test_a_clock_behind_the_chain_is_judged_at_the_entry_time(app, users, not_after, ok):
    """§5: a request whose clock reads earlier than the newest entry gets that
    entry's time, and every time rule is judged at it: here ``not_after_ts > ts``
    with ``ts`` the head's T0, not the request's earlier clock."""
    with at(T0):
        users.register("bob@example.org")
    with at(T0 - 10_000):
        message, _, _ = users.create_message("alice@example.org", not_before_ts=T0 - 20_000,
                                             not_after_ts=not_after)
        if ok:
            response = users.put("alice@example.org", message)
            assert response.status_code == 201, response.json
            assert response.json["entry"]["ts"] == T0
        else:
            expect_error(users, app, "alice@example.org", message, 400, "INVALID_VALIDITY")


def test_an_update_raced_by_the_create_it_follows_is_judged_inside_the_lock(app, users,
                                                                             monkeypatch):
    """The signatures are verified outside the write lock against the state then, and
    again inside when a racing write changed it (keyserver.service.twophase). An
    update of alice signed by a stranger, sent while alice does not exist yet (no
    verdict possible then), races her create: inside the lock it must be
    INVALID_SIGNATURE. Without the re-check the race hands alice to the stranger."""
    created, _, _ = users.create_message("alice@example.org")
    stranger = Account("alice@example.org", nacl.signing.SigningKey.generate(), None, created,
                       None)
    forged, _ = users.update_message(stranger)
    real_write = http_users.write

    def create_first(job):
        monkeypatch.setattr(http_users, "write", real_write)
        assert users.put("alice@example.org", created).status_code == 201
        return real_write(job)

    monkeypatch.setattr(http_users, "write", create_first)
    response = users.put("alice@example.org", forged)
    assert (response.status_code, response.json["errcode"]) == (400, "INVALID_SIGNATURE")
    with app.app_context():
        assert chain.head(db.get_db()).pos == 1
        assert db.get_db().conn.execute("SELECT msgcount FROM identities WHERE identity = ?",
                                        ("alice@example.org",)).fetchone() == (0,)


# --- signatures ----------------------------------------------------------------------------

def test_selfsignature_by_wrong_key(app, users):
    message, _, escrow = users.create_message("alice@example.org")
    other = nacl.signing.SigningKey.generate()
    message["selfsignature"] = b64encode(other.sign(canonical_json(message["content"])).signature)
    expect_error(users, app, "alice@example.org", message, 400, "INVALID_SIGNATURE")


def test_content_changed_after_signing(app, users):
    message, _, _ = users.create_message("alice@example.org")
    message["content"]["repouris"] = [OWN_REPO]   # allowed, but not what was signed
    expect_error(users, app, "alice@example.org", message, 400, "INVALID_SIGNATURE")


def test_create_needs_escrow_proof(app, users):
    message, sigkey, escrow = users.create_message("alice@example.org")
    expect_error(users, app, "alice@example.org", resign(message, sigkey), 400,
                 "INVALID_SIGNATURE")
    no_escrow, sigkey2, _ = users.create_message("alice@example.org", escrow=None)
    no_escrow["escrowsignature"] = message["escrowsignature"]
    expect_error(users, app, "alice@example.org", no_escrow, 400, "INVALID_SIGNATURE")


def test_create_with_usersignature(app, users):
    message, sigkey, escrow = users.create_message("alice@example.org")
    signed = resign(message, sigkey, escrow_key=escrow, previous_sigkey=sigkey)
    expect_error(users, app, "alice@example.org", signed, 400, "INVALID_SIGNATURE")


def test_update_signed_by_wrong_previous_key(app, users):
    account = users.register("alice@example.org")
    message, new_key = users.update_message(account)
    forged = resign(message, new_key, previous_sigkey=nacl.signing.SigningKey.generate())
    expect_error(users, app, account.identity, forged, 400, "INVALID_SIGNATURE")


def expect_update_refused(app, client, users, account, message):
    """The update is refused INVALID_SIGNATURE and the identity is as it was."""
    head = client.get("/v1/hashchain/head").json
    expect_error(users, app, account.identity, message, 400, "INVALID_SIGNATURE")
    assert client.get("/v1/hashchain/head").json == head
    lookup = client.get(f"/v1/users/{account.identity}").json
    assert lookup["uid_message_reply"] == account.reply


def test_update_selfsignature_by_wrong_key(app, client, users):
    account = users.register("alice@example.org")
    message, new_key = users.update_message(account)
    other = nacl.signing.SigningKey.generate()
    data = canonical_json(message["content"])
    message["selfsignature"] = b64encode(other.sign(data).signature)
    # the usersignature, by alice's current sigkey, is good: only the selfsignature is bad
    assert message["usersignature"] == b64encode(account.sigkey.sign(data).signature)
    expect_update_refused(app, client, users, account, message)
    message, _ = users.update_message(account, new_sigkey=new_key)
    assert users.put(account.identity, message).status_code == 200


@pytest.mark.parametrize("resign_usersignature", [False, True])
def test_update_content_changed_after_signing(app, client, users, resign_usersignature):
    account = users.register("alice@example.org")
    message, new_key = users.update_message(account)
    selfsignature = message["selfsignature"]
    message["content"]["repouris"] = [OWN_REPO]   # allowed, but not what was signed
    if resign_usersignature:
        # the previous sigkey signs the changed content: only the selfsignature is stale
        message = resign(message, new_key, previous_sigkey=account.sigkey)
        message["selfsignature"] = selfsignature
    expect_update_refused(app, client, users, account, message)


def test_update_with_both_signatures(app, users):
    account = users.register("alice@example.org")
    message, new_key = users.update_message(account)
    both = resign(message, new_key, previous_sigkey=account.sigkey, escrow_key=account.escrow)
    expect_error(users, app, account.identity, both, 400, "INVALID_SIGNATURE")
    neither = resign(message, new_key)
    expect_error(users, app, account.identity, neither, 400, "INVALID_SIGNATURE")


def test_escrow_change_without_old_escrow_key(app, users):
    account = users.register("alice@example.org")
    thief_escrow = nacl.signing.SigningKey.generate()
    message, _ = users.update_message(account, sigescrow=ed25519_entry(thief_escrow))
    expect_error(users, app, account.identity, message, 400, "INVALID_SIGNATURE")
    removing, _ = users.update_message(account, sigescrow=None)
    expect_error(users, app, account.identity, removing, 400, "INVALID_SIGNATURE")


def test_recovery_without_registered_escrow(app, users):
    account = users.register("alice@example.org", escrow=None)
    account.escrow = nacl.signing.SigningKey.generate()
    message, _ = users.update_message(account, by="escrow")
    expect_error(users, app, account.identity, message, 400, "INVALID_SIGNATURE")


def test_recovery_by_wrong_escrow_key(app, users):
    account = users.register("alice@example.org")
    account.escrow = nacl.signing.SigningKey.generate()
    message, _ = users.update_message(account, by="escrow")
    expect_error(users, app, account.identity, message, 400, "INVALID_SIGNATURE")


# --- lastentry -----------------------------------------------------------------------------

def test_unknown_lastentry_is_stale(app, users):
    message, _, _ = users.create_message("alice@example.org", lastentry=bytes(32))
    expect_error(users, app, "alice@example.org", message, 400, "STALE_LASTENTRY")


def test_lastentry_freshness_boundary(app, users):
    with at(T0):
        old_head = users.lastentry()            # entry 0
        users.register("alice@example.org")     # entry 1, appended at T0: 0's successor
    max_age = app.config["LASTENTRY_MAX_AGE"]
    with at(T0 + max_age):
        message, _, _ = users.create_message("bob@example.org", lastentry=old_head)
        assert users.put("bob@example.org", message).status_code == 201
    with at(T0 + max_age + 1):
        message, _, _ = users.create_message("carol@example.org", lastentry=old_head)
        expect_error(users, app, "carol@example.org", message, 400, "STALE_LASTENTRY")
        # the head itself is always fresh, however old
        message, _, _ = users.create_message("carol@example.org")
        assert users.put("carol@example.org", message).status_code == 201


# --- order of checks -----------------------------------------------------------------------

def test_order_identity_before_everything_else(app, users):
    message, _, _ = users.create_message("alice@other.org", lastentry=bytes(32),
                                         not_after_ts=1)
    expect_error(users, app, "alice@other.org", message, 403, "DOMAIN_NOT_SERVED")


def test_order_state_before_validity_before_signature_before_lastentry(app, users):
    users.register("alice@example.org")
    message, _, _ = users.create_message("alice@example.org", not_after_ts=1,
                                         lastentry=bytes(32))
    message["selfsignature"] = b64encode(bytes(64))
    expect_error(users, app, "alice@example.org", message, 409, "IDENTITY_TAKEN")
    message["content"]["identity"] = "bob@example.org"
    expect_error(users, app, "bob@example.org", message, 400, "INVALID_VALIDITY")
    good, _, _ = users.create_message("bob@example.org", lastentry=bytes(32))
    good["selfsignature"] = b64encode(bytes(64))
    expect_error(users, app, "bob@example.org", good, 400, "INVALID_SIGNATURE")


# --- reads ---------------------------------------------------------------------------------

def test_lookup(client, users):
    account = users.register("alice@example.org")
    body = client.get("/v1/users/alice@example.org").json
    assert body["identity"] == "alice@example.org"
    assert body["uid_message_reply"] == account.reply
    assert body["head"] == client.get("/v1/hashchain/head").json


@pytest.mark.parametrize("path,status,errcode", [
    ("/v1/users/Alice@example.org", 400, "INVALID_IDENTITY"),
    ("/v1/users/nobody@example.org", 404, "NOT_FOUND"),
    ("/v1/users/nobody@example.org/history", 404, "NOT_FOUND"),
    ("/v1/users/alice@example.org/history?page_size=0", 400, "BAD_REQUEST"),
    ("/v1/users/alice@example.org/history?page_size=101", 400, "BAD_REQUEST"),
    ("/v1/users/alice@example.org/history?start=-1", 400, "BAD_REQUEST"),
    ("/v1/uids/AAAA", 400, "BAD_REQUEST"),
    ("/v1/uids/" + b64url_encode(bytes(32)), 404, "NOT_FOUND"),
    ("/v1/uids/" + b64url_encode(bytes(32)) + "=", 400, "BAD_REQUEST"),
])
def test_read_errors(client, users, path, status, errcode):
    users.register("alice@example.org")
    response = client.get(path)
    assert (response.status_code, response.json["errcode"]) == (status, errcode)


def test_lookup_can_be_disabled(instance, users):
    users.register("alice@example.org")
    from keyserver import create_app

    app = create_app({"LOOKUP_ENABLED": False}, instance_path=str(instance))
    for path in ("/v1/users/alice@example.org", "/v1/users/alice@example.org/history"):
        response = app.test_client().get(path)
        assert (response.status_code, response.json["errcode"]) == (404, "NOT_FOUND")
        assert "disabled" in response.json["error"]


def test_history_pages(client, users):
    account = users.register("alice@example.org")
    for _ in range(4):
        account = users.update(account)
    first = client.get("/v1/users/alice@example.org/history?page_size=2").json
    assert [v["entry"]["hashchain_pos"] for v in first["values"]] == [1, 2]
    assert first["next_start"] == 2
    second = client.get("/v1/users/alice@example.org/history?start=2&page_size=2").json
    third = client.get("/v1/users/alice@example.org/history?start=4&page_size=2").json
    assert [v["entry"]["hashchain_pos"] for v in second["values"]] == [3, 4]
    assert [v["entry"]["hashchain_pos"] for v in third["values"]] == [5]
    assert third["next_start"] is None
    beyond = client.get("/v1/users/alice@example.org/history?start=9").json
    assert beyond == {"values": [], "next_start": None}

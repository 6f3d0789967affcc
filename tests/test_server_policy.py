"""The server's policy on the chain (§4 ``preferences.server``, §7.3 "limits from the
chain", §10.4 token keys bound to the chain), from the pure rules to the real
``keyclient`` against a server that changes its policy to cheat."""

import dataclasses

import nacl.signing
import pytest

from client.clock import now_ms
from client.protocol.encoding import b64decode, b64encode
from client.protocol.errors import InvalidMessage, VerificationError
from client.protocol.keys import ed25519_entry
from client.protocol.note import VerifierKey, format_verifier_key, parse_verifier_key
from client.protocol.uidmessage import (ServerPreferences, build_uid_content,
                                        parse_uid_message, sign_uid_content)
from client.protocol.uidrules import check_server_member
from client.store.home import Home
from client.store.wallet import Wallet
from client.trust.serverpolicy import (ChainPolicy, PolicyAt, check_capabilities_policy,
                                       token_key_refusal)
from client.protocol.wire import parse_capabilities
from conftest import (DAY_MS, TEST_TOKEN_KEY_LIFETIME, ServerUserActions, a_day_later, at,
                      keyclient, serve_in_process)
from simulator import TamperFetcher
from tamper_proxy import capabilities_changed

HOUR_MS = 3600 * 1000
T0 = 1_800_000_000_000
LOG_KEY = VerifierKey("example.org/keyserver", bytes(range(32)))
KEY_A, KEY_B, KEY_C = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32


def prefs(*token_keys, grace=30 * DAY_MS, lifetime=365 * DAY_MS):
    return ServerPreferences(LOG_KEY, tuple(token_keys), grace, lifetime)


# --- the log key's verifier-key form (§8) ---------------------------------------------

def test_the_log_verifier_key_is_the_vector(vectors):
    vector = vectors["checkpoint"]
    pubkey = bytes(nacl.signing.SigningKey(bytes.fromhex(vector["seed"])).verify_key)
    key = VerifierKey(vector["origin"], pubkey)
    assert key.key_hash.hex() == vector["key_hash"]
    assert format_verifier_key(key) == vector["verifier_key"]
    assert parse_verifier_key(vector["verifier_key"]) == key


@pytest.mark.parametrize("text, problem", [
    ("example.org/keyserver+356fe3cd", "expected <name>"),
    ("example org+356fe3cd+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4", "expected <name>"),
    ("example.org/keyserver+356FE3CD+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4",
     "expected <name>"),
    ("example.org/keyserver+356fe3cd+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG", "base64"),
    ("example.org/keyserver+356fe3cd+BAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4",
     "not an Ed25519 key"),
    ("example.org/other+356fe3cd+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4",
     "key hash does not match"),
    (7, "must be a string"),
])
def test_a_malformed_verifier_key_is_refused(text, problem):
    with pytest.raises(InvalidMessage, match=problem):
        parse_verifier_key(text)


# --- preferences.server in a UIDMessage (§4) ------------------------------------------

def message(identity, server=None, raw_server=None):
    sigkey = nacl.signing.SigningKey.generate()
    content = build_uid_content(identity, ed25519_entry(sigkey), msgcount=0,
                                not_before_ts=T0, not_after_ts=T0 + DAY_MS,
                                lastentry=bytes(32), server=server)
    if raw_server is not None:
        content["preferences"]["server"] = raw_server
    return sign_uid_content(content, sigkey)


def test_preferences_server_round_trips_and_only_the_server_carries_it():
    own = parse_uid_message(message("keyserver@example.org", prefs(KEY_A, KEY_B)))
    assert own.server == prefs(KEY_A, KEY_B)
    check_server_member(own, "keyserver@example.org")
    with pytest.raises(InvalidMessage, match="must carry preferences.server"):
        check_server_member(parse_uid_message(message("keyserver@example.org")),
                            "keyserver@example.org")
    alice = parse_uid_message(message("alice@example.org", prefs()))
    with pytest.raises(InvalidMessage, match="only the server's own messages"):
        check_server_member(alice, "keyserver@example.org")


GOOD = {"log_vkey": format_verifier_key(LOG_KEY), "token_keys": [b64encode(KEY_A)],
        "limits": {"reclaim_grace_ms": 1, "max_uid_lifetime_ms": 2}}


@pytest.mark.parametrize("change, problem", [
    (lambda s: s.update(token_keys=[b64encode(k) for k in (KEY_A, KEY_B, KEY_C)]),
     "at most 2 items"),
    (lambda s: s.update(token_keys=[b64encode(KEY_A)] * 2), "must be distinct"),
    (lambda s: s.update(token_keys=[b64encode(b"short")]), "token_keys\\[0\\]"),
    (lambda s: s.update(extra=1), "unknown extra"),
    (lambda s: s.pop("limits"), "missing limits"),
    (lambda s: s.update(limits={"reclaim_grace_ms": 1}), "missing max_uid_lifetime_ms"),
    (lambda s: s.update(limits={"reclaim_grace_ms": 1, "max_uid_lifetime_ms": 0}),
     "max_uid_lifetime_ms"),
    (lambda s: s.update(log_vkey="example.org/keyserver"), "log_vkey"),
])
def test_a_malformed_preferences_server_is_refused(change, problem):
    server = {**GOOD, "limits": dict(GOOD["limits"])}
    change(server)
    with pytest.raises(InvalidMessage, match=problem):
        parse_uid_message(message("keyserver@example.org", raw_server=server))


def test_the_server_refuses_preferences_server_in_a_users_message(client):
    """No other identity may carry it (§4): a user's message with it is refused before
    anything is stored."""
    own = {**GOOD, "token_keys": []}
    response = client.put("/v1/users/alice@example.org",
                          json={"uid_message": message("alice@example.org", raw_server=own)})
    assert (response.status_code, response.json["errcode"]) == (400, "INVALID_MESSAGE")
    assert "only the server's own messages" in response.json["error"]


# --- the chain's policy (trust.serverpolicy) ------------------------------------------

def chain_policy(*records):
    return ChainPolicy([PolicyAt(pos, ts, ts, server) for pos, ts, server in records])


def test_the_limits_of_a_position_are_those_of_the_latest_server_message_before_it():
    policy = chain_policy((0, T0, prefs(grace=10)), (5, T0 + 1, prefs(grace=3, lifetime=7)),
                          (9, T0 + 2, prefs(grace=20)))
    assert [policy.at(pos).reclaim_grace_ms for pos in (0, 4, 5, 8, 9, 100)] == \
        [10, 10, 3, 3, 20, 20]
    # A reclaim waits for the largest grace in force since the message it replaces.
    assert policy.largest_grace(2, 8) == 10        # shortened at 5: not applied
    assert policy.largest_grace(5, 8) == 3
    assert policy.largest_grace(6, 9) == 20
    alice = parse_uid_message(message("alice@example.org"))
    dated = policy.dated([(3, alice, T0, T0), (7, alice, T0 + 5, T0 + 4)])
    assert [(d.reclaim_grace_ms, d.max_uid_lifetime_ms, d.effective_ts) for d in dated] == \
        [(10, 365 * DAY_MS, T0), (10, 7, T0 + 4)]
    with pytest.raises(ValueError):
        ChainPolicy([PolicyAt(1, T0, T0, prefs())])


def test_a_token_key_counts_as_listed_from_when_it_was_last_listed():
    policy = ChainPolicy([PolicyAt(0, T0, T0, prefs(KEY_A)),
                          PolicyAt(3, T0 + 10, T0 + 5, prefs(KEY_A, KEY_B)),
                          PolicyAt(6, T0 + 20, T0 + 20, prefs(KEY_B)),
                          PolicyAt(8, T0 + 30, T0 + 30, prefs(KEY_B, KEY_A))])
    assert policy.listed_since(KEY_B) == T0 + 5          # its effective time (§7.3)
    assert policy.listed_since(KEY_A) == T0 + 30         # dropped at 6, listed again
    assert policy.listed_since(KEY_C) is None
    assert policy.token_key_changes(T0) == 3
    assert policy.token_key_changes(T0 + 11) == 2
    assert policy.token_key_changes(T0 + 10) == 3        # a change dated since_ts counts
    unchanged = chain_policy((0, T0, prefs(KEY_A)), (1, T0 + 1, prefs(KEY_A, grace=1)))
    assert unchanged.token_key_changes(T0) == 0


def test_a_client_buys_only_under_a_key_listed_for_a_day():
    policy = chain_policy((0, T0, prefs(KEY_A)))
    far = T0 + 1000 * DAY_MS
    assert token_key_refusal(policy, KEY_A, far, T0 + DAY_MS) is None
    # The refusals are the user's only explanation of why no token is bought.
    too_recent = ("the key was listed on the chain less than 24 hours ago, too recently for "
                  "everyone to have seen it; try again in about {} hour(s)")
    assert token_key_refusal(policy, KEY_A, far, T0 + DAY_MS - 1) == too_recent.format(1)
    assert token_key_refusal(policy, KEY_A, far, T0 + DAY_MS - HOUR_MS) == too_recent.format(1)
    assert token_key_refusal(policy, KEY_A, far, T0 + DAY_MS - HOUR_MS - 1) \
        == too_recent.format(2)                                  # rounded up
    assert token_key_refusal(policy, KEY_A, far, T0) == too_recent.format(24)
    assert token_key_refusal(policy, KEY_B, far, far - 1) == (
        "the key is not listed on the chain, so other buyers may not see it: tokens under it "
        "could be linked to you")
    assert token_key_refusal(policy, KEY_A, T0 + DAY_MS, T0 + DAY_MS) == "the key has expired"


def test_capabilities_must_state_the_chains_limits_and_log_key(client):
    capabilities = parse_capabilities(client.get("/v1/capabilities").json)
    limits = capabilities.limits
    policy = chain_policy((0, T0, dataclasses.replace(
        prefs(), log_vkey=capabilities.log_vkey, reclaim_grace_ms=limits.reclaim_grace_ms,
        max_uid_lifetime_ms=limits.max_uid_lifetime_ms)))
    check_capabilities_policy(capabilities, policy)
    shortened = dataclasses.replace(
        capabilities, limits=dataclasses.replace(limits, reclaim_grace_ms=1))
    with pytest.raises(VerificationError, match="other limits than its chain"):
        check_capabilities_policy(shortened, policy)
    with pytest.raises(VerificationError, match="another log key"):
        check_capabilities_policy(dataclasses.replace(capabilities, log_vkey=LOG_KEY), policy)


# --- the server keeps the chain's policy and its own in step --------------------------

def own_policy(app):
    from keyserver.service import own
    from keyserver.storage import db

    with app.app_context():
        return own.current(db.get_db()), db.get_db().conn.execute(
            "SELECT count(*) FROM chain").fetchone()[0]


def test_init_binds_the_log_key_the_first_token_key_and_the_limits(app, instance):
    from keyserver.service import signing
    from keyserver.service.own import log_verifier_key

    server, length = own_policy(app)
    log_key = signing.read_log_key(str(instance / "log.key"))
    assert server.log_vkey == log_verifier_key("example.org", log_key)
    capabilities = app.test_client().get("/v1/capabilities").json
    assert capabilities["log_vkey"] == format_verifier_key(server.log_vkey)
    assert [b64decode(key["key_id"]) for key in capabilities["token_keys"]] == \
        list(server.token_keys)
    assert (server.reclaim_grace_ms, server.max_uid_lifetime_ms) == \
        (app.config["RECLAIM_GRACE"], app.config["MAX_UID_LIFETIME"])
    assert length == 1 and (instance / "log.key").stat().st_mode & 0o777 == 0o600


def test_a_changed_limit_is_appended_once_and_a_client_follows_it(
        app_server, tmp_path):
    from keyserver import create_app

    home = tmp_path / "home"
    assert keyclient(home, "server", "add", app_server.url).exit_code == 0
    changed = create_app({"TESTING": True, "RECLAIM_GRACE": 5 * DAY_MS},
                         instance_path=str(app_server.instance))
    server, length = own_policy(changed)
    assert server.reclaim_grace_ms == 5 * DAY_MS and length == 2
    create_app({"TESTING": True, "RECLAIM_GRACE": 5 * DAY_MS},
               instance_path=str(app_server.instance))
    assert own_policy(changed)[1] == 2                      # nothing new to state
    # The old app still states the old grace: a client refuses those capabilities ...
    refused = keyclient(home, "sync")
    assert refused.exit_code == 1 and "other limits than its chain" in refused.output
    # ... and accepts the restarted server's, the update being validly signed.
    app_server.app = changed
    app_server.fetcher.app = changed
    result = keyclient(home, "sync")
    assert result.exit_code == 0, result.output


# --- hostile servers against the real keyclient ---------------------------------------

@pytest.fixture
def long_lived(tmp_path, monkeypatch):
    """An in-process server whose token key outlives the clocks moved years ahead."""
    monkeypatch.setenv("KEYSERVER_TOKEN_KEY_LIFETIME", TEST_TOKEN_KEY_LIFETIME)
    return serve_in_process(monkeypatch, tmp_path / "app")


def test_a_grace_shortened_after_the_fact_is_not_applied(long_lived, tmp_path):
    """The server registers alice, then states a reclaim grace of 1 ms on its chain and
    hands alice@ to a new owner just after her not_after_ts: the grace in force when
    she registered still protects her, so the client refuses the new owner and keeps
    the evidence."""
    from keyserver import create_app

    users = ServerUserActions(long_lived)
    reply = users.register("alice@example.org")
    home = tmp_path / "home"
    assert keyclient(home, "server", "add", long_lived.url).exit_code == 0
    assert keyclient(home, "lookup", "alice@example.org").exit_code == 0
    not_after = long_lived_not_after(long_lived, reply)
    with at(not_after + 60_000, tick=True):
        shortened = create_app({"TESTING": True, "RECLAIM_GRACE": 1},
                               instance_path=str(long_lived.instance))
        long_lived.app = long_lived.fetcher.app = shortened
        assert own_policy(shortened)[0].reclaim_grace_ms == 1
        users.register("alice@example.org")                    # the server accepts it
        result = keyclient(home, "lookup", "alice@example.org")
    assert result.exit_code == 1, result.output
    assert "this server is cheating" in result.output and "already registered" in result.output
    [(_, what, replies, _)] = Home(str(home)).evidence("example.org")
    assert "already registered" in what and len(replies) == 2


def long_lived_not_after(server, reply):
    """alice's not_after_ts, as the server stored it."""
    from keyserver.storage import db, uids

    with server.app.app_context():
        return uids.latest(db.get_db(), "alice@example.org").not_after_ts


def capabilities_resigned(server, change):
    """An attack by the server itself: its capabilities ``change``d and signed again
    with its own, real key (a hostile server holds it)."""
    from keyserver.http.context import current_key

    with server.app.app_context():
        return capabilities_changed(change, signed_by=current_key())


@pytest.fixture
def tampering(long_lived):
    long_lived.fetcher = TamperFetcher(long_lived.app, long_lived.url)
    return long_lived.fetcher


def test_capabilities_with_other_limits_than_the_chain_are_refused(long_lived, tampering,
                                                                    tmp_path):
    home = tmp_path / "home"
    assert keyclient(home, "server", "add", long_lived.url).exit_code == 0
    tampering.attack = capabilities_resigned(
        long_lived, lambda c: c["limits"].update(reclaim_grace_ms=0))
    result = keyclient(home, "sync")
    assert result.exit_code == 1
    assert "state other limits than its chain" in result.output
    assert "this server is cheating" in result.output
    assert tampering.errors == []


def rotate(server):
    server.command("tokens", "rotate-key")


def wallet_keys(home):
    wallet = Wallet(str(home / "wallet.sqlite"))
    try:
        return [row[0] for row in wallet.db.execute("SELECT DISTINCT key_id FROM tokens")]
    finally:
        wallet.close()


def test_tokens_are_bought_only_under_a_key_listed_for_a_day(long_lived, tampering, tmp_path):
    """A key the server made minutes ago (for one buyer, perhaps) is never used to buy:
    the client buys under the older listed key, and refuses when only the new one is
    offered, or one the chain does not list at all."""
    [voucher] = long_lived.vouchers(10)
    home = tmp_path / "home"
    with a_day_later():
        assert keyclient(home, "server", "add", long_lived.url).exit_code == 0
        rotate(long_lived)
        first, new = own_policy(long_lived.app)[0].token_keys
        result = keyclient(home, "tokens", "buy", voucher, "-n", "2")
        assert result.exit_code == 0, result.output
        assert wallet_keys(home) == [first]                    # not the new key
        tampering.attack = capabilities_resigned(long_lived, lambda c: c.update(
            token_keys=[k for k in c["token_keys"] if b64decode(k["key_id"]) == new]))
        refused = keyclient(home, "tokens", "buy", voucher, "-n", "2")
        assert refused.exit_code == 1
        assert "listed on the chain less than 24 hours ago" in refused.output
        assert "try again in about 24 hour(s)" in refused.output
        private = nacl.signing.SigningKey.generate()   # any 32 bytes: a key id of nobody's
        tampering.attack = capabilities_resigned(long_lived, lambda c: c.update(
            token_keys=[{**c["token_keys"][0], "key_id": b64encode(bytes(private))}]))
        refused = keyclient(home, "tokens", "buy", voucher, "-n", "2")
        assert refused.exit_code == 1 and "not listed on the chain" in refused.output
        tampering.attack = None
    with at(now_ms() + 2 * DAY_MS + 120_000, tick=True):  # a day after the rotation
        result = keyclient(home, "tokens", "buy", voucher, "-n", "2")
        assert result.exit_code == 0, result.output
    assert sorted(wallet_keys(home)) == sorted([first, new])
    assert tampering.errors == []


def test_tokens_under_a_key_no_longer_listed_are_not_spent(long_lived, tmp_path,
                                                             cheap_keystore):
    home = tmp_path / "home"
    assert keyclient(home, "server", "add", long_lived.url).exit_code == 0
    minted = [line.split('"')[1] for line in long_lived.mint(1)]
    assert keyclient(home, "tokens", "add", *minted).exit_code == 0
    rotate(long_lived)
    rotate(long_lived)                        # the first key is no longer listed
    result = keyclient(home, "register", "alice@example.org", "--escrow-out",
                       str(tmp_path / "escrow.txt"), "--yes")
    assert result.exit_code == 1
    assert "no longer lists on its chain" in result.output
    assert "example.org: 1 available" in keyclient(home, "tokens", "list").output


def test_frequent_token_key_changes_are_warned_about(long_lived, tmp_path):
    """§10.4: more than 4 changes of the token keys in 30 days are worth a warning."""
    [voucher] = long_lived.vouchers(2)
    home = tmp_path / "home"
    for _ in range(4):
        rotate(long_lived)
    with a_day_later():
        assert keyclient(home, "server", "add", long_lived.url).exit_code == 0
        result = keyclient(home, "tokens", "buy", voucher, "-n", "1")
        assert result.exit_code == 0, result.output
        assert "changed its token keys" not in result.output
        rotate(long_lived)
    with at(now_ms() + 2 * DAY_MS + 120_000, tick=True):
        result = keyclient(home, "tokens", "buy", voucher, "-n", "1")
    assert result.exit_code == 0, result.output
    assert "changed its token keys 5 times in the last 30 days" in result.output

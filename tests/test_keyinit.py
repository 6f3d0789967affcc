"""KeyInit messages (§9): format, add rules, fetch choice, flush, opening."""

import copy
import random
import re

import nacl.bindings
import nacl.signing
import pytest
from conftest import mutate

from client.protocol.encoding import b64decode, b64encode, canonical_json, sha256
from client.protocol.errors import (
    InvalidMessage,
    InvalidSignature,
    InvalidValidity,
    KeyinitLimit,
    MsgcountMismatch,
    VerificationError,
)
from client.protocol.keyinit import (
    FLUSH,
    FLUSH_WINDOW_MS,
    STATUS,
    Candidate,
    SessionAnchor,
    build_keyinit,
    build_session_anchor,
    check_owner_request,
    check_keyinit_batch,
    choose_keyinit,
    choose_repositories,
    decrypt_session_anchor,
    encrypt_session_anchor,
    is_current,
    keyinit_hash,
    open_keyinit,
    owner_request_bytes,
    parse_add_request,
    parse_keyinit,
    parse_session_anchor,
    sigkeyhash,
    sign_flush,
    sign_owner_request,
)
from client.protocol.keys import X25519, KeyEntry, ed25519_entry

NOW = 1_700_000_000_000
HOUR = 3600 * 1000
DAY = 24 * HOUR
MAX_LIFETIME = 30 * DAY
IDENTITY_NOT_AFTER = NOW + 365 * DAY
REPO = "https://keys.example.org"
SIGNING_KEY = nacl.signing.SigningKey(bytes(range(32)))
SIGKEY = ed25519_entry(SIGNING_KEY)
OTHER_KEY = nacl.signing.SigningKey(bytes(range(1, 33)))
PFKEY = KeyEntry(X25519, nacl.bindings.crypto_scalarmult_base(bytes(range(2, 34))))
ANCHOR = build_session_anchor([PFKEY], mixaddress="mix.example.org", nymaddress="nym-1")


def make(msgcount=1, *, not_before_ts=NOW - HOUR, not_after_ts=NOW + DAY, fallback=False,
         repouri=REPO, key=SIGNING_KEY, anchor=ANCHOR) -> dict:
    return build_keyinit(key, msgcount=msgcount, not_before_ts=not_before_ts,
                         not_after_ts=not_after_ts, fallback=fallback, repouri=repouri,
                         anchor=anchor, nonce=bytes(24))


def check(keyinits, **overrides):
    args = {"sigkey": SIGKEY, "repouris": [REPO], "last_msgcount": None,
            "identity_not_after_ts": IDENTITY_NOT_AFTER, "now_ms": NOW,
            "max_lifetime_ms": MAX_LIFETIME, "max_per_request": 50, "stored_count": 0,
            "max_stored": 100} | overrides
    check_keyinit_batch([parse_keyinit(k) for k in keyinits], **args)


def names(path: str) -> str:
    """The start of an error that names the malformed field: exactly ``path``, then a
    colon (the server sends this text as ``error``, the client prints it)."""
    return "^" + re.escape(path) + ": "


# --- format ----------------------------------------------------------------------

def test_session_anchor_round_trip():
    assert parse_session_anchor(ANCHOR) == SessionAnchor("mix.example.org", "nym-1", (PFKEY,))
    assert build_session_anchor([PFKEY]) == {"mixaddress": "", "nymaddress": "",
                                             "pfkeys": [PFKEY.to_json()]}


def test_build_session_anchor_needs_x25519_keys():
    with pytest.raises(ValueError):
        build_session_anchor([])
    with pytest.raises(ValueError):
        build_session_anchor([SIGKEY])


@pytest.mark.parametrize("change,field", [
    (lambda a: a.update(extra=""), "sessionanchor"),
    (lambda a: a.pop("nymaddress"), "sessionanchor"),
    (lambda a: a.update(pfkeys=[]), "sessionanchor.pfkeys"),
    (lambda a: a.update(pfkeys=PFKEY.to_json()), "sessionanchor.pfkeys"),
    (lambda a: a.update(pfkeys=[SIGKEY.to_json()]), "sessionanchor.pfkeys[0].function"),
    (lambda a: a.update(pfkeys=[PFKEY.to_json(), {"function": X25519, "pubkey": ""}]),
     "sessionanchor.pfkeys[1].pubkey"),
    (lambda a: a.update(mixaddress=None), "sessionanchor.mixaddress"),
    (lambda a: a.update(nymaddress=1), "sessionanchor.nymaddress"),
])
def test_session_anchor_rejects(change, field):
    """Each malformed member is refused, and the error names it by its full path."""
    anchor = copy.deepcopy(ANCHOR)
    change(anchor)
    with pytest.raises(InvalidMessage, match=names(field)):
        parse_session_anchor(anchor)


def test_keyinit_layout():
    keyinit = make()
    contents = keyinit["contents"]
    pubkey = SIGKEY.pubkey
    assert contents["sigkeyhash"] == b64encode(sha256(sha256(pubkey)))
    assert sigkeyhash(pubkey) == sha256(sha256(pubkey))
    assert contents["sessionanchorhash"] == b64encode(sha256(canonical_json(ANCHOR)))
    sealed = b64decode(contents["sessionanchor"])
    assert sealed == encrypt_session_anchor(ANCHOR, pubkey, bytes(24))
    # nonce24 || tag16 || ciphertext, with no key hash in front.
    assert sealed[:24] == bytes(24) and len(sealed) == 24 + 16 + len(canonical_json(ANCHOR))
    assert nacl.bindings.crypto_secretbox_open(sealed[24:], sealed[:24], sha256(pubkey)) == \
        canonical_json(ANCHOR)
    assert decrypt_session_anchor(sealed, pubkey) == canonical_json(ANCHOR)
    SIGNING_KEY.verify_key.verify(canonical_json(contents),
                                  b64decode(keyinit["signature"], length=64))
    assert keyinit_hash(keyinit) == sha256(canonical_json(keyinit))


def test_random_nonces_differ():
    first = encrypt_session_anchor(ANCHOR, SIGKEY.pubkey)
    assert first[:24] != encrypt_session_anchor(ANCHOR, SIGKEY.pubkey)[:24]


def test_parse_round_trip():
    keyinit = make(7, fallback=True)
    parsed = parse_keyinit(keyinit)
    assert (parsed.msgcount, parsed.fallback, parsed.repouri) == (7, True, REPO)
    assert (parsed.not_before_ts, parsed.not_after_ts) == (NOW - HOUR, NOW + DAY)
    assert parsed.sigkeyhash == sigkeyhash(SIGKEY.pubkey)
    assert parsed.sessionanchorhash == sha256(canonical_json(ANCHOR))
    assert parsed.contents_bytes == canonical_json(keyinit["contents"])
    assert parsed.hash == keyinit_hash(keyinit) and parsed.raw is keyinit
    assert len(parsed.signature) == 64


@pytest.mark.parametrize("path,value,field", [
    (("extra",), 1, ""),
    (("signature",), KeyError, ""),
    (("contents",), [], ".contents"),
    (("contents", "extra"), 1, ".contents"),
    (("contents", "repouri"), KeyError, ".contents"),
    (("contents", "version"), "2", ".contents.version"),
    (("contents", "version"), 1, ".contents.version"),
    (("contents", "msgcount"), -1, ".contents.msgcount"),
    (("contents", "msgcount"), 1.0, ".contents.msgcount"),
    (("contents", "msgcount"), True, ".contents.msgcount"),
    (("contents", "not_before_ts"), "1", ".contents.not_before_ts"),
    (("contents", "not_after_ts"), 2**53, ".contents.not_after_ts"),
    (("contents", "fallback"), 0, ".contents.fallback"),
    (("contents", "fallback"), "false", ".contents.fallback"),
    (("contents", "fallback"), None, ".contents.fallback"),
    (("contents", "sigkeyhash"), b64encode(bytes(31)), ".contents.sigkeyhash"),
    (("contents", "sigkeyhash"), b64encode(bytes(32)) + "=", ".contents.sigkeyhash"),
    (("contents", "repouri"), None, ".contents.repouri"),
    (("contents", "sessionanchor"), b64encode(bytes(39)), ".contents.sessionanchor"),
    (("contents", "sessionanchor"), "", ".contents.sessionanchor"),
    (("contents", "sessionanchorhash"), b64encode(bytes(33)), ".contents.sessionanchorhash"),
    (("contents", "sessionanchorhash"), "!", ".contents.sessionanchorhash"),
    (("signature",), b64encode(bytes(63)), ".signature"),
    (("signature",), "", ".signature"),
])
def test_parse_rejects(path, value, field):
    """Each malformed member is refused, and the error names it by its full path: under
    ``keyinit`` alone (what the sender's client prints), under ``keyinits[3]`` as the
    fourth item of an add request (what the server answers)."""
    keyinit = mutate(make(), path, value)
    with pytest.raises(InvalidMessage, match=names("keyinit" + field)):
        parse_keyinit(keyinit)
    with pytest.raises(InvalidMessage, match=names("keyinits[3]" + field)):
        parse_keyinit(keyinit, "keyinits[3]")


def test_parse_add_request():
    sigkey, keyinits = parse_add_request({"sigkey": SIGKEY.to_json(),
                                          "keyinits": [make(1), make(2)]}, max_per_request=2)
    assert sigkey == SIGKEY and [k.msgcount for k in keyinits] == [1, 2]


@pytest.mark.parametrize("body,field", [
    ([], "request"),
    ({"sigkey": SIGKEY.to_json()}, "request"),
    ({"sigkey": SIGKEY.to_json(), "keyinits": [make(1)], "extra": 1}, "request"),
    ({"sigkey": {"function": "ed25519"}, "keyinits": [make(1)]}, "sigkey"),
    ({"sigkey": PFKEY.to_json(), "keyinits": []}, "sigkey.function"),
    ({"sigkey": {"function": "ed25519", "pubkey": "x"}, "keyinits": []}, "sigkey.pubkey"),
    ({"sigkey": SIGKEY.to_json(), "keyinits": {}}, "keyinits"),
    ({"sigkey": SIGKEY.to_json(), "keyinits": [make(1), {}]}, "keyinits[1]"),
    ({"sigkey": SIGKEY.to_json(),
      "keyinits": [make(1), mutate(make(2), ("contents", "msgcount"), "2")]},
     "keyinits[1].contents.msgcount"),
])
def test_parse_add_request_rejects(body, field):
    """The server's INVALID_MESSAGE answer to a malformed add request names the
    malformed member by its full path, so that its sender can find it."""
    with pytest.raises(InvalidMessage, match=names(field)):
        parse_add_request(body, max_per_request=50)


def test_parse_add_request_bounds_the_batch_before_parsing_items():
    """One item over the maximum is refused whatever the items hold: none is parsed."""
    with pytest.raises(InvalidMessage, match="1 to 2 KeyInits per request, not 3"):
        parse_add_request({"sigkey": SIGKEY.to_json(), "keyinits": [{}, {}, {}]},
                          max_per_request=2)
    with pytest.raises(InvalidMessage, match="not 0"):
        parse_add_request({"sigkey": SIGKEY.to_json(), "keyinits": []}, max_per_request=2)


# --- adding ----------------------------------------------------------------------

def test_batch_accepted():
    check([make(1), make(5, fallback=True), make(6)], last_msgcount=0)


def test_batch_size_boundaries():
    check([make(i) for i in range(3)], max_per_request=3)
    with pytest.raises(InvalidMessage, match="1 to 3"):
        check([make(i) for i in range(4)], max_per_request=3)
    with pytest.raises(InvalidMessage):
        check([])


def test_stored_limit_boundary():
    check([make(1), make(2)], stored_count=98, max_stored=100)
    with pytest.raises(KeyinitLimit):
        check([make(1), make(2)], stored_count=99, max_stored=100)


def test_msgcount_must_exceed_last_accepted():
    check([make(6)], last_msgcount=5)
    with pytest.raises(MsgcountMismatch, match="greater than 5"):
        check([make(5)], last_msgcount=5)
    check([make(0)], last_msgcount=None)


@pytest.mark.parametrize("counts", [(1, 1), (2, 1), (1, 3, 2)])
def test_msgcount_increasing_within_batch(counts):
    with pytest.raises(InvalidMessage, match="increasing msgcount"):
        check([make(c) for c in counts])


def test_not_after_must_be_in_the_future():
    check([make(not_before_ts=NOW - 1, not_after_ts=NOW + 1)])
    with pytest.raises(InvalidValidity, match="future"):
        check([make(not_before_ts=NOW - 1, not_after_ts=NOW)])


def test_not_before_must_precede_not_after():
    with pytest.raises(InvalidValidity, match="before"):
        check([make(not_before_ts=NOW + HOUR, not_after_ts=NOW + HOUR)])


@pytest.mark.parametrize("identity_not_after", [NOW + DAY, NOW + 365 * DAY])
def test_not_after_limit_boundary(identity_not_after):
    limit = min(identity_not_after, NOW + MAX_LIFETIME)
    check([make(not_after_ts=limit)], identity_not_after_ts=identity_not_after)
    with pytest.raises(InvalidValidity, match=f"at most {limit}"):
        check([make(not_after_ts=limit + 1)], identity_not_after_ts=identity_not_after)


def test_wrong_sigkeyhash():
    with pytest.raises(InvalidMessage, match=r"keyinits\[1\]\.contents\.sigkeyhash"):
        check([make(1), make(2, key=OTHER_KEY)])


def test_repouri_must_be_served():
    with pytest.raises(InvalidMessage, match=r"keyinits\[0\]\.contents\.repouri"):
        check([make(repouri="https://elsewhere.example")])


def test_tampered_contents():
    keyinit = mutate(make(), ("contents", "fallback"), True)
    with pytest.raises(InvalidSignature, match=r"keyinits\[0\]"):
        check([keyinit])


def test_tampered_signature():
    keyinit = make()
    signature = bytearray(b64decode(keyinit["signature"], length=64))
    signature[0] ^= 1
    with pytest.raises(InvalidSignature):
        check([mutate(keyinit, ("signature",), b64encode(bytes(signature)))])


def test_signed_by_another_key_with_right_hash():
    forged = make()
    forged["signature"] = b64encode(OTHER_KEY.sign(canonical_json(forged["contents"])).signature)
    with pytest.raises(InvalidSignature):
        check([forged])


def broken(msgcount):
    """Expired and with a bad signature, but with the right key and repository."""
    return mutate(make(msgcount, not_after_ts=NOW), ("contents", "fallback"), True)


@pytest.mark.parametrize("batch,state,error,message", [
    ([broken(9), make(8, key=OTHER_KEY)], (9, 99), InvalidMessage, "increasing"),
    ([broken(9), make(10, key=OTHER_KEY)], (9, 99), InvalidMessage, "sigkeyhash"),
    ([broken(9), make(10, repouri="https://x.example")], (9, 99), InvalidMessage, "repouri"),
    ([broken(9)], (9, 99), MsgcountMismatch, "greater than 9"),
    ([broken(9), make(10)], (None, 99), KeyinitLimit, "99 KeyInits"),
    ([mutate(make(1), ("contents", "fallback"), True), broken(2)], (None, 0),
     InvalidValidity, r"keyinits\[1\]"),
    ([make(1), mutate(make(2), ("contents", "fallback"), True)], (None, 0),
     InvalidSignature, r"keyinits\[1\]"),
])
def test_check_order(batch, state, error, message):
    """Shape, key, state, validity, signature: the earliest failing stage decides,
    whichever item fails it."""
    last_msgcount, stored_count = state
    with pytest.raises(error, match=message):
        check(batch, last_msgcount=last_msgcount, stored_count=stored_count)


# --- fetching --------------------------------------------------------------------

def test_is_current_boundaries():
    assert is_current(Candidate(NOW, NOW + 1, False), NOW)
    assert not is_current(Candidate(NOW + 1, NOW + 2, False), NOW)
    assert not is_current(Candidate(NOW - 2, NOW, False), NOW)
    assert is_current(parse_keyinit(make()), NOW)


def test_non_fallback_earliest_expiry_first():
    rng = random.Random(1)
    candidates = [Candidate(NOW - 1, NOW + 3 * HOUR, False),
                  Candidate(NOW - 1, NOW + 1, True),
                  Candidate(NOW - 1, NOW + HOUR, False),
                  Candidate(NOW - 1, NOW + HOUR, False)]
    assert choose_keyinit(candidates, NOW, rng) == (2, True)


def test_expired_and_future_never_chosen():
    rng = random.Random(1)
    candidates = [Candidate(NOW - HOUR, NOW, False),          # expired at now
                  Candidate(NOW + 1, NOW + HOUR, False),      # not yet valid
                  Candidate(NOW, NOW + 2 * HOUR, False),      # valid from now
                  Candidate(NOW - HOUR, NOW + HOUR, True)]
    assert choose_keyinit(candidates, NOW, rng) == (2, True)
    assert choose_keyinit(candidates[:2], NOW, rng) == (None, False)
    assert choose_keyinit([], NOW, rng) == (None, False)
    assert choose_keyinit(candidates[:2] + candidates[3:], NOW, rng) == (2, False)


def test_only_current_fallback_never_deleted():
    rng = random.Random(7)
    candidates = [Candidate(NOW - HOUR, NOW + 1, True),
                  Candidate(NOW - HOUR, NOW, True),             # expired
                  Candidate(NOW + 1, NOW + 10 * HOUR, True)]    # not yet valid
    for _ in range(200):
        assert choose_keyinit(candidates, NOW, rng) == (0, False)


class ScriptedRandom(random.Random):
    """Returns the given values from ``random()``, then records what it returned."""

    def __init__(self, values=()):
        super().__init__(0)
        self.values = list(values)
        self.returned = []

    def random(self):
        value = self.values.pop(0) if self.values else super().random()
        self.returned.append(value)
        return value


def test_fallback_deletion_iff_r_greater_than_n():
    candidates = [Candidate(NOW - 1, NOW + 1000, True),
                  Candidate(NOW - 1, NOW + 4000, True)]
    # n = 1000 for the first, m = 4000: r = 4000 * u.
    weights_total = 1 / 1000 + 1 / 4000
    first = 0.5 * (1 / 1000) / weights_total    # lands on candidate 0
    assert choose_keyinit(candidates, NOW, ScriptedRandom([first, 0.25])) == (0, False)
    assert choose_keyinit(candidates, NOW, ScriptedRandom([first, 0.25 + 2**-40])) == (0, True)
    # r = 0 is outside (0, m) and is drawn again.
    assert choose_keyinit(candidates, NOW, ScriptedRandom([first, 0.0, 0.9])) == (0, True)
    # The longest-lived one (n == m) is never deleted.
    assert choose_keyinit(candidates, NOW, ScriptedRandom([0.99, 0.999999])) == (1, False)


def test_fallback_deletion_both_outcomes_seeded():
    candidates = [Candidate(NOW - 1, NOW + HOUR, True),
                  Candidate(NOW - 1, NOW + 10 * HOUR, True),
                  Candidate(NOW - 1, NOW + 4 * HOUR, True)]
    remaining = [HOUR, 10 * HOUR, 4 * HOUR]
    rng = ScriptedRandom()
    outcomes = set()
    for _ in range(500):
        index, delete = choose_keyinit(candidates, NOW, rng)
        r = rng.returned[-1] * max(remaining)
        assert delete == (r > remaining[index])
        outcomes.add(delete)
    assert outcomes == {True, False}


def test_fallback_bias_towards_short_lifetime():
    rng = random.Random(20240601)
    candidates = [Candidate(NOW - 1, NOW + 10 * HOUR, True),
                  Candidate(NOW - 1, NOW + HOUR, True)]
    draws = 20000
    short = sum(choose_keyinit(candidates, NOW, rng)[0] == 1 for _ in range(draws))
    # Weight 1/n gives 10/11 (about 0.909); a uniform choice would give 0.5.
    assert 0.88 < short / draws < 0.94



def test_fallback_draw_is_proportional_to_inverse_lifetime_among_several():
    """§9: each current fallback KeyInit is drawn with weight 1/n, not only the
    first or the last of the list."""
    rng = random.Random(20240602)
    candidates = [Candidate(NOW - 1, NOW + HOUR, True),
                  Candidate(NOW - 1, NOW + 2 * HOUR, True),
                  Candidate(NOW - 1, NOW + 4 * HOUR, True)]
    draws = 14000
    counts = [0, 0, 0]
    for _ in range(draws):
        counts[choose_keyinit(candidates, NOW, rng)[0]] += 1
    # Weights 1, 1/2, 1/4: shares 4/7, 2/7, 1/7.
    for count, share in zip(counts, (4 / 7, 2 / 7, 1 / 7)):
        assert abs(count / draws - share) < 0.02


# --- flushing --------------------------------------------------------------------

SKH = sigkeyhash(SIGKEY.pubkey)


def flush(body, *, now_ms=NOW, last_flush_ts=None, repouri=REPO):
    return check_owner_request(FLUSH, body, sigkey_pubkey=SIGKEY.pubkey, repouri=repouri,
                               sigkeyhash=SKH, now_ms=now_ms, last_ts=last_flush_ts)


def test_flush_signing_bytes():
    assert owner_request_bytes(FLUSH, REPO, "abc", 5) == (
        b'{"action":"flush","repouri":"https://keys.example.org","sigkeyhash":"abc","ts":5}')


def test_flush_round_trip():
    body = sign_flush(SIGNING_KEY, REPO, SKH, NOW)
    assert set(body) == {"ts", "signature"}
    assert flush(body, last_flush_ts=NOW - 1) == NOW


@pytest.mark.parametrize("offset", [FLUSH_WINDOW_MS, -FLUSH_WINDOW_MS])
def test_flush_window_boundary(offset):
    assert flush(sign_flush(SIGNING_KEY, REPO, SKH, NOW + offset)) == NOW + offset
    beyond = offset + (1 if offset > 0 else -1)
    with pytest.raises(InvalidValidity, match="within"):
        flush(sign_flush(SIGNING_KEY, REPO, SKH, NOW + beyond))


def test_flush_replay_rejected():
    with pytest.raises(InvalidValidity, match="last accepted"):
        flush(sign_flush(SIGNING_KEY, REPO, SKH, NOW), last_flush_ts=NOW)


def test_flush_bad_signatures():
    for body in (sign_flush(OTHER_KEY, REPO, SKH, NOW),
                 sign_flush(SIGNING_KEY, "https://elsewhere.example", SKH, NOW),
                 sign_flush(SIGNING_KEY, REPO, bytes(32), NOW),
                 sign_flush(SIGNING_KEY, REPO, SKH, NOW - 1) | {"ts": NOW}):
        with pytest.raises(InvalidSignature):
            flush(body)


def test_a_status_request_is_not_a_flush_nor_the_other_way_round():
    """The signed action names the request (the status request is our extension)."""
    status = sign_owner_request(STATUS, SIGNING_KEY, REPO, SKH, NOW)
    assert check_owner_request(STATUS, status, sigkey_pubkey=SIGKEY.pubkey, repouri=REPO,
                               sigkeyhash=SKH, now_ms=NOW) == NOW
    with pytest.raises(InvalidSignature, match='"action": "flush"'):
        flush(status)
    with pytest.raises(InvalidSignature, match='"action": "status"'):
        check_owner_request(STATUS, sign_flush(SIGNING_KEY, REPO, SKH, NOW),
                            sigkey_pubkey=SIGKEY.pubkey, repouri=REPO, sigkeyhash=SKH,
                            now_ms=NOW)


@pytest.mark.parametrize("action", [FLUSH, STATUS])
@pytest.mark.parametrize("body,field", [
    ({"ts": NOW}, ""),
    ({"ts": NOW, "signature": "", "extra": 1}, ""),
    ({"ts": float(NOW), "signature": b64encode(bytes(64))}, ".ts"),
    ({"ts": NOW, "signature": b64encode(bytes(63))}, ".signature"),
    ({"ts": NOW, "signature": "not base64!"}, ".signature"),
    ([], ""),
])
def test_flush_shape(action, body, field):
    """A malformed flush or status request is refused before its time and signature
    are looked at, with an error naming the request and its malformed member."""
    with pytest.raises(InvalidMessage, match=names(action + field)):
        check_owner_request(action, body, sigkey_pubkey=SIGKEY.pubkey, repouri=REPO,
                            sigkeyhash=SKH, now_ms=NOW)


# --- opening ---------------------------------------------------------------------

def test_open_round_trip():
    anchor = open_keyinit(make(), sigkey=SIGKEY, now_ms=NOW, repouri=REPO)
    assert anchor == parse_session_anchor(ANCHOR)


def reseal(keyinit, plaintext: bytes, anchor_hash: bytes | None = None) -> dict:
    """A KeyInit properly signed by the owner around an arbitrary plaintext."""
    contents = dict(keyinit["contents"])
    nonce = bytes(24)
    contents["sessionanchor"] = b64encode(
        nonce + nacl.bindings.crypto_secretbox(plaintext, nonce, sha256(SIGKEY.pubkey)))
    contents["sessionanchorhash"] = b64encode(anchor_hash or sha256(plaintext))
    return {"contents": contents,
            "signature": b64encode(SIGNING_KEY.sign(canonical_json(contents)).signature)}


def tampered_anchor():
    keyinit = make()
    sealed = bytearray(b64decode(keyinit["contents"]["sessionanchor"]))
    sealed[-1] ^= 1
    return mutate(keyinit, ("contents", "sessionanchor"), b64encode(bytes(sealed)))


@pytest.mark.parametrize("keyinit,kwargs,message", [
    (make(), {"sigkey": ed25519_entry(OTHER_KEY)}, "sigkeyhash"),
    (make(key=OTHER_KEY), {}, "sigkeyhash"),
    (mutate(make(), ("contents", "msgcount"), 2), {}, "signature"),
    (make(not_after_ts=NOW), {}, "not valid now"),
    (make(not_before_ts=NOW + 1), {}, "not valid now"),
    (make(), {"repouri": "https://elsewhere.example"}, "made for"),
    (tampered_anchor(), {}, "signature"),
    (reseal(make(), canonical_json(ANCHOR), sha256(b"other")), {}, "sessionanchorhash"),
    (reseal(make(), b'{"mixaddress":"","nymaddress":""}'), {},
     "malformed session anchor: sessionanchor: missing pfkeys"),
    (reseal(make(), b'{"mixaddress":"","nymaddress":"","pfkeys":{}}'), {},
     "malformed session anchor: sessionanchor.pfkeys: must be a non-empty list"),
    (reseal(make(), b'{"pfkeys":[],"mixaddress":"","nymaddress":""}'), {},
     "not canonical"),
    (reseal(make(), b"\xff"), {}, "malformed session anchor"),
    (mutate(make(), ("contents", "fallback"), "no"), {},
     "malformed KeyInit: keyinit.contents.fallback: must be true or false"),
])
def test_open_rejects(keyinit, kwargs, message):
    """What the sender's client prints when a fetched KeyInit fails, naming the
    malformed field when it is one."""
    args = {"sigkey": SIGKEY, "now_ms": NOW, "repouri": REPO} | kwargs
    with pytest.raises(VerificationError, match=re.escape(message)):
        open_keyinit(keyinit, **args)


def test_open_rejects_anchor_that_does_not_open():
    # Signed by the owner, but sealed under the wrong key.
    keyinit = make()
    contents = dict(keyinit["contents"])
    nonce = bytes(24)
    contents["sessionanchor"] = b64encode(
        nonce + nacl.bindings.crypto_secretbox(canonical_json(ANCHOR), nonce, bytes(32)))
    forged = {"contents": contents,
              "signature": b64encode(SIGNING_KEY.sign(canonical_json(contents)).signature)}
    with pytest.raises(VerificationError, match="does not open"):
        open_keyinit(forged, sigkey=SIGKEY, now_ms=NOW)


def test_choose_repositories_keeps_only_vouched_private_ones():
    """§9 (revision 2): a sender contacts what the keyserver vouches for, over https
    (http to loopback only); the rest is skipped with a reason, order kept."""
    vouched = ("https://b.example", "http://127.0.0.1:8000", "http://keys.example",
               "https://a.example")
    listed = ["https://a.example", "http://evil.internal", "http://keys.example",
              "http://127.0.0.1:8000", "https://b.example"]
    usable, skipped = choose_repositories(listed, vouched, "example.org")
    assert usable == ("https://a.example", "http://127.0.0.1:8000", "https://b.example")
    assert [(s.uri, s.reason) for s in skipped] == [
        ("http://evil.internal", "not a KeyInit repository example.org vouches for"),
        ("http://keys.example",
         "'http://keys.example' is neither https nor http to a loopback address")]
    assert choose_repositories([], vouched, "example.org") == ((), ())

"""What key documents say of a server key at a time (``client.trust.keydocs``, §11.3),
the keyring that asks its sources in order (``client.keyring``), and a notary's
answer (``client.protocol.keyquery``, §11.4): pure rules and fake sources."""

import nacl.signing
import pytest

from client.keyring import FetchKeyResult, KeyFetcher, Keyring
from client.protocol.encoding import b64encode
from client.protocol.errors import ProtocolError, TransportError, VerificationError
from client.protocol.keyquery import Notary, format_key_query, parse_notary_answer
from client.protocol.serverkeys import format_key_document, parse_key_document, sign_key_document
from client.protocol.signedjson import sign_json
from client.store.home import Home
from client.trust.keydocs import (KeyDocumentRefused, KeyNotValid, Verdict, check_document_keys,
                                  disagreement, key_verdict)
from client.trust.keyring import ServerKey

SERVER = "example.org"
A, B, STRANGER = (nacl.signing.SigningKey(bytes([n]) * 32) for n in (1, 2, 3))
PA, PB, PS = (bytes(key.verify_key) for key in (A, B, STRANGER))
T = 1_800_000_000_000
HOUR = 3600 * 1000


def document(current, old=(), valid_until_ts=T + 24 * HOUR, name=SERVER):
    """A self-signed key document: ``current`` keys, ``old`` (key, expired_ts) pairs."""
    ids = {PA: "ed25519:a", PB: "ed25519:b", PS: "ed25519:s"}
    keys = {PA: A, PB: B, PS: STRANGER}
    raw = format_key_document(name, {ids[bytes(k.verify_key)]: bytes(k.verify_key)
                                     for k in current},
                              {ids[bytes(k.verify_key)]: (bytes(k.verify_key), ts)
                               for k, ts in old}, valid_until_ts)
    raw = sign_key_document(raw, name, {ids[bytes(k.verify_key)]: keys[bytes(k.verify_key)]
                                        for k in current})
    return parse_key_document(raw, name)


DURING = document([A, B])                        # the overlap of a rotation A -> B
AFTER = document([B], old=[(A, T + HOUR)])        # the overlap ended at T + 1 h


@pytest.mark.parametrize("doc, pubkey, ts, previous, verdict", [
    (DURING, PA, T, False, Verdict.VALID),
    (DURING, PB, T + 24 * HOUR, False, Verdict.VALID),           # valid_until_ts, inclusive
    (DURING, PB, T + 24 * HOUR + 1, False, Verdict.UNKNOWN),     # past it: refetch
    (DURING, PA, T - 1, True, Verdict.VALID),                    # the overlap, as fetched
    (DURING, PA, T, True, Verdict.VALID),                        # dated at the fetch
    (DURING, PA, T + 1, True, Verdict.UNKNOWN),                  # later than the fetch
    (AFTER, PA, T + HOUR - 1, True, Verdict.VALID),              # before expired_ts
    (AFTER, PA, T + HOUR, True, Verdict.EXPIRED),                # from expired_ts on
    (AFTER, PA, T + HOUR, False, Verdict.EXPIRED),               # whatever the position
    (AFTER, PS, T, False, Verdict.UNKNOWN),                      # not named: maybe newer
    (None, PA, T, False, Verdict.UNKNOWN),
], ids=["current", "until-inclusive", "past-validity", "previous-before-fetch",
        "previous-at-fetch", "previous-after-fetch", "old-before-expiry", "old-at-expiry", "expired-any-position",
        "unnamed", "no-document"])
def test_the_verdict_of_a_document(doc, pubkey, ts, previous, verdict):
    assert key_verdict(doc, T, pubkey, ts, previous) is verdict


def test_a_document_naming_a_key_off_the_chain_is_refused():
    check_document_keys(AFTER, [PA, PB])
    with pytest.raises(KeyDocumentRefused) as refused:
        check_document_keys(document([B], old=[(STRANGER, T)]), [PA, PB])
    # The user is told which key the chain does not know.
    assert str(refused.value).endswith(
        f"no signing key of keyserver@example.org on the chain: {b64encode(PS)}")


def test_disagreement_compares_every_key_not_which_are_current():
    assert disagreement(DURING, AFTER) is None       # the overlap ended in between
    assert "the notary does not know ed25519:b" in disagreement(DURING, document([A]))
    assert "the server did not show ed25519:b" in disagreement(document([A]), DURING)


def signed_document(keys):
    """A self-signed document with ``keys`` (key id -> signing key) as its current keys,
    whatever ids they carry elsewhere."""
    raw = format_key_document(SERVER, {key_id: bytes(key.verify_key)
                                       for key_id, key in keys.items()}, {}, T + 24 * HOUR)
    return parse_key_document(sign_key_document(raw, SERVER, keys), SERVER)


@pytest.mark.parametrize("notarized, why", [
    (signed_document({"ed25519:s": STRANGER, "ed25519:t": A}),
     "the notary does not know ed25519:a, ed25519:b; "
     "the server did not show ed25519:s, ed25519:t"),
    (signed_document({"ed25519:a": B, "ed25519:b": A}), "other keys under ed25519:a, ed25519:b"),
    (signed_document({"ed25519:a": B, "ed25519:s": STRANGER}),
     "the notary does not know ed25519:b; the server did not show ed25519:s; "
     "other keys under ed25519:a"),
])
def test_disagreement_names_every_key_id_in_question(notarized, why):
    # The user's only explanation of why the server is not trusted: a key id
    # holding another key is as much a disagreement as a missing one.
    assert disagreement(DURING, notarized) == why


class Source(KeyFetcher):
    def __init__(self, result, source="fake"):
        self.result, self.source, self.asked = result, source, 0

    def get_keys(self, server_name, key_ids, minimum_valid_until_ts):
        self.asked += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result and FetchKeyResult(self.result, T, self.source)


KEYS = [ServerKey(0, 0, PA), ServerKey(5, T, PB)]


@pytest.fixture
def home(tmp_path):
    return Home(str(tmp_path / "home"))


def test_the_keyring_asks_the_next_source_only_when_it_cannot_tell(home):
    failing, stale, fresh, unused = (Source(TransportError("down")),
                                     Source(document([A], valid_until_ts=T)),
                                     Source(DURING), Source(DURING))
    keyring = Keyring(home, SERVER, [failing, stale, fresh, unused])
    for n in range(1000):                       # one document covers many objects
        keyring.check_valid(PB, T + n, KEYS, False, "a reply")
    assert (failing.asked, stale.asked, fresh.asked, unused.asked) == (1, 1, 1, 0)
    assert home.key_document(SERVER)[0] == DURING     # kept for the next session


def test_an_expired_key_is_final(home):
    later = Source(DURING)
    keyring = Keyring(home, SERVER, [Source(AFTER), later])
    with pytest.raises(KeyNotValid, match="had expired before the time it bears"):
        keyring.check_valid(PA, T + HOUR, KEYS, True, "a reply")
    assert later.asked == 0


def test_nothing_that_tells_is_a_refusal_naming_each_source(home):
    keyring = Keyring(home, SERVER, [Source(TransportError("down"), "origin"),
                                     Source(None, "notary n.org")])
    with pytest.raises(KeyNotValid, match="origin: down; notary n.org: no document"):
        keyring.check_valid(PB, T, KEYS, False, "a reply")


def test_every_source_refused_for_a_stranger_key(home):
    bad = document([B], old=[(STRANGER, T)])
    keyring = Keyring(home, SERVER, [Source(bad), Source(bad)])
    with pytest.raises(KeyDocumentRefused):
        keyring.check_valid(PB, T, KEYS, False, "a reply")


def member(**members):
    return {**DURING.raw, **members}


KEY = {"key": b64encode(PA)}
#: Shape errors come before the signature check: each names the member (§11.1).
MALFORMED_DOCUMENTS = {
    "a-list": ([], "not a JSON object"),
    "name-not-a-string": (member(server_name=1), "server_name: must be a string"),
    "name-not-a-server-name": (member(server_name="Example.org"),
                               "server_name 'Example.org' is not a server name"),
    "no-current-key": (member(verify_keys={}), "verify_keys: 1 to 2 keys, not 0"),
    "three-current-keys": (member(verify_keys={"ed25519:a": KEY, "ed25519:b": KEY,
                                               "ed25519:c": KEY}),
                           "verify_keys: 1 to 2 keys, not 3"),
    "not-an-ed25519-id": (member(verify_keys={"rsa:a": KEY}),
                          "verify_keys: must map ed25519 key ids"),
    "key-not-an-object": (member(verify_keys={"ed25519:a": b64encode(PA)}),
                          'verify_keys ed25519:a: expected {"key": base64}'),
    "key-of-31-bytes": (member(verify_keys={"ed25519:a": {"key": b64encode(PA[:31])}}),
                        "verify_keys ed25519:a: must encode 32 bytes, not 31"),
    "old-not-a-map": (member(old_verify_keys=[]), "old_verify_keys: must map ed25519 key ids"),
    "old-key-not-an-object": (member(old_verify_keys={"ed25519:o": b64encode(PA)}),
                              'old_verify_keys ed25519:o: expected {"key": base64}'),
    "old-key-without-expiry": (member(old_verify_keys={"ed25519:o": KEY}),
                               "old_verify_keys ed25519:o expired_ts: must be an integer in "
                               "[0, 2^53-1]"),
    "negative-validity": (member(valid_until_ts=-1),
                          "valid_until_ts: must be an integer in [0, 2^53-1]"),
    "validity-a-bool": (member(valid_until_ts=True),
                        "valid_until_ts: must be an integer in [0, 2^53-1]"),
}


@pytest.mark.parametrize("obj, message", MALFORMED_DOCUMENTS.values(),
                         ids=MALFORMED_DOCUMENTS.keys())
def test_a_malformed_key_document_is_refused_naming_the_member(obj, message):
    with pytest.raises(VerificationError) as refused:
        parse_key_document(obj, SERVER)
    assert str(refused.value) == f"malformed key document: {message}"


def test_times_at_the_ends_of_their_range_are_read():
    """0 and 2^53-1 are times like any other: a document valid until 0 (and a key that
    expired at 0) parses, and is then simply not valid at any later ts."""
    doc = document([A], old=[(STRANGER, 0)], valid_until_ts=0)
    assert doc.valid_until_ts == 0 and doc.old_verify_keys["ed25519:s"] == (PS, 0)
    assert key_verdict(doc, T, PS, T, False) is Verdict.EXPIRED
    assert document([A], valid_until_ts=2 ** 53 - 1).valid_until_ts == 2 ** 53 - 1


def test_a_document_without_old_verify_keys_is_read():
    """Matrix's key documents may leave out ``old_verify_keys``: none then."""
    raw = {name: value for name, value in document([A]).raw.items()
           if name not in ("old_verify_keys", "signatures")}
    doc = parse_key_document(sign_key_document(raw, SERVER, {"ed25519:a": A}), SERVER)
    assert doc.old_verify_keys == {} and doc.verify_keys == {"ed25519:a": PA}


NOTARY_KEY = nacl.signing.SigningKey(bytes([9]) * 32)
NOTARY = Notary("notary.org", "https://notary.org", "ed25519:n", bytes(NOTARY_KEY.verify_key))


@pytest.mark.parametrize("name, key_id, pubkey, message", [
    ("Notary.org", "ed25519:n", bytes(32),
     "'Notary.org' is not a valid server name (lowercase DNS name, no port)"),
    ("notary.org", "rsa:n", bytes(32), "'rsa:n' is not an ed25519 key id"),
    ("notary.org", "ed25519:n", bytes(31), "a notary key is 32 bytes"),
    ("notary.org", "ed25519:n", bytes(33), "a notary key is 32 bytes"),
])
def test_a_notary_is_refused_with_the_reason_keyclient_shows(name, key_id, pubkey, message):
    # ``keyclient notary add`` prints this message as the only explanation.
    with pytest.raises(ProtocolError) as refused:
        Notary(name, "https://notary.org", key_id, pubkey)
    assert str(refused.value) == message


def test_a_notary_answer_counts_only_signed_by_the_notary():
    signed = sign_json(DURING.raw, "notary.org", "ed25519:n", NOTARY_KEY)
    other = sign_json(document([A], name="other.org").raw, "notary.org", "ed25519:n", NOTARY_KEY)
    [parsed] = parse_notary_answer({"server_keys": [other, signed]}, SERVER, NOTARY)
    assert parsed == DURING
    forged = sign_json(DURING.raw, "notary.org", "ed25519:n", STRANGER)
    with pytest.raises(VerificationError, match="notary notary.org did not sign"):
        parse_notary_answer({"server_keys": [forged]}, SERVER, NOTARY)
    with pytest.raises(VerificationError, match="server_keys"):
        parse_notary_answer({"server_keys": {}}, SERVER, NOTARY)


@pytest.mark.parametrize("answer", [[], "server_keys", None, {"server_keys": [{}] * 17}])
def test_a_notary_answer_of_the_wrong_shape_or_too_long_is_refused(answer):
    with pytest.raises(VerificationError, match="at most 16 documents"):
        parse_notary_answer(answer, SERVER, NOTARY)


def test_a_notary_answer_of_sixteen_documents_is_read():
    signed = sign_json(DURING.raw, "notary.org", "ed25519:n", NOTARY_KEY)
    other = sign_json(document([A], name="other.org").raw, "notary.org", "ed25519:n", NOTARY_KEY)
    assert parse_notary_answer({"server_keys": [other] * 15 + [signed]}, SERVER, NOTARY) \
        == [DURING]
    assert format_key_query(SERVER, ["ed25519:a"], T) == {
        "server_keys": {SERVER: {"ed25519:a": {"minimum_valid_until_ts": T}}}}

"""UIDMessage shape (§4) and its encrypted storage layout (§5)."""

import json

import nacl.bindings
import nacl.signing
import pytest
from conftest import mutate

from client.protocol.encoding import b64encode, canonical_json, sha256
from client.protocol.errors import InvalidMessage
from client.protocol.keys import X25519, KeyEntry, ed25519_entry
from client.protocol.note import VerifierKey
from client.protocol.uidmessage import (
    ServerPreferences,
    build_uid_content,
    encrypt_uid_message,
    parse_uid_message,
    seal,
    sign_uid_content,
    uid_hash,
    update_uid_content,
)


def test_encrypted_layout_vector(vectors):
    case = vectors["uid_message_encrypted"]
    message = json.loads(case["canonical_message_utf8"])
    data = canonical_json(message)
    assert data.decode() == case["canonical_message_utf8"]
    encrypted = seal(data, bytes.fromhex(case["uid_hash"]), bytes.fromhex(case["nonce"]))
    assert encrypted.hex() == case["uid_message_encrypted"]
    assert len(encrypted) == case["length"]


def test_encrypted_opens_with_uid_hash():
    message = {"content": {"identity": "x@y"}}
    key, encrypted = encrypt_uid_message(message)
    assert encrypted[:32] == sha256(key) and key == uid_hash(message)
    assert nacl.bindings.crypto_secretbox_open(encrypted[56:], encrypted[32:56], key) == \
        canonical_json(message)


@pytest.fixture
def keys():
    return nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()


@pytest.fixture
def message(keys):
    sigkey, escrow = keys
    content = build_uid_content("alice@example.org", ed25519_entry(sigkey), msgcount=0,
                                not_before_ts=1, not_after_ts=2, lastentry=bytes(32),
                                sigescrow=ed25519_entry(escrow), repouris=["https://k.example"])
    return sign_uid_content(content, sigkey, escrow_key=escrow)


@pytest.fixture
def server_message(keys):
    """A message with every member, the server's policy (§4) included, so that each
    can be made malformed in turn; its signatures are not what is tested."""
    sigkey, escrow = keys
    policy = ServerPreferences(VerifierKey("example.org/keyserver", bytes(32)),
                               (bytes(32),), 1000, 2000)
    content = build_uid_content("keyserver@example.org", ed25519_entry(sigkey), msgcount=0,
                                not_before_ts=1, not_after_ts=2, lastentry=bytes(32),
                                sigescrow=ed25519_entry(escrow), pubkeys=[x25519_entry()],
                                repouris=["https://k.example"], ciphersuites=["suite-a"],
                                server=policy)
    message = sign_uid_content(content, sigkey, escrow_key=escrow)
    assert parse_uid_message(message).server == policy
    return message


def test_parse_round_trip(message, keys):
    parsed = parse_uid_message(message)
    assert parsed.identity == "alice@example.org"
    assert parsed.sigkey == ed25519_entry(keys[0]) and parsed.sigescrow == ed25519_entry(keys[1])
    assert parsed.usersignature == b"" and len(parsed.escrowsignature) == 64
    assert parsed.key_hashes == (sha256(bytes(keys[0].verify_key)),
                                 sha256(bytes(keys[1].verify_key)))
    assert parsed.content_bytes == canonical_json(message["content"])


_SERVER = ("content", "preferences", "server")


@pytest.mark.parametrize("path,value,named", [
    (("extra",), 1, "uid_message: unknown extra"),
    (("selfsignature",), KeyError, "uid_message: missing selfsignature"),
    (("content",), [], "content: must be a JSON object"),
    (("content", "extra"), 1, "content: unknown extra"),
    (("content", "chainlink"), KeyError, "content: missing chainlink"),
    (("content", "version"), "2", "content.version:"),
    (("content", "version"), 1, "content.version:"),
    (("content", "chainlink"), {}, "content.chainlink:"),
    (("content", "msgcount"), -1, "content.msgcount:"),
    (("content", "msgcount"), 1.0, "content.msgcount:"),
    (("content", "msgcount"), True, "content.msgcount:"),
    (("content", "not_before_ts"), "1", "content.not_before_ts:"),
    (("content", "not_after_ts"), 2**53, "content.not_after_ts:"),
    (("content", "identity"), 5, "content.identity:"),
    (("content", "pubkeys"), {}, "content.pubkeys:"),
    (("content", "pubkeys"), [{"function": "ed25519", "pubkey": "A" * 43}],
     "content.pubkeys[0].function:"),
    (("content", "repouris"), "https://k.example", "content.repouris:"),
    (("content", "repouris"), ["https://k.example", 1], "content.repouris[1]:"),
    (("content", "preferences"), [], "content.preferences: must be a JSON object"),
    (("content", "preferences", "forwardsec"), "sometimes", "content.preferences.forwardsec:"),
    (("content", "preferences", "extra"), 1, "content.preferences: unknown extra"),
    (("content", "preferences", "ciphersuites"), "x", "content.preferences.ciphersuites:"),
    (("content", "preferences", "ciphersuites"), ["c", None],
     "content.preferences.ciphersuites[1]:"),
    (("content", "lastentry"), b64encode(bytes(31)), "content.lastentry:"),
    (("content", "lastentry"), "", "content.lastentry:"),
    (("content", "nymaddress"), "QR", "content.nymaddress:"),
    (("content", "mixaddress"), None, "content.mixaddress:"),
    (("content", "sigkey", "function"), "x25519", "content.sigkey.function:"),
    (("content", "sigkey", "pubkey"), "A" * 42, "content.sigkey.pubkey:"),
    (("content", "sigescrow"), "", "content.sigescrow: must be a JSON object"),
    (("selfsignature",), "", "selfsignature:"),
    (("usersignature",), b64encode(bytes(63)), "usersignature:"),
    (("escrowsignature",), None, "escrowsignature:"),
    (_SERVER, [], "content.preferences.server: must be a JSON object"),
    (_SERVER + ("limits",), KeyError, "content.preferences.server: missing limits"),
    (_SERVER + ("limits",), [], "content.preferences.server.limits: must be a JSON object"),
    (_SERVER + ("limits", "reclaim_grace_ms"), -1,
     "content.preferences.server.limits.reclaim_grace_ms:"),
    (_SERVER + ("limits", "max_uid_lifetime_ms"), 0,
     "content.preferences.server.limits.max_uid_lifetime_ms:"),
    (_SERVER + ("token_keys",), "", "content.preferences.server.token_keys:"),
    (_SERVER + ("token_keys",), [b64encode(bytes(32)), b64encode(bytes(31))],
     "content.preferences.server.token_keys[1]:"),
    (_SERVER + ("token_keys",), [b64encode(bytes(32))] * 2,
     "content.preferences.server.token_keys: the keys must be distinct"),
    (_SERVER + ("log_vkey",), "example.org+0", "content.preferences.server.log_vkey:"),
])
def test_malformed_messages_rejected(server_message, path, value, named):
    """A malformed message is refused naming the member at fault, by its path in the
    message: the server answers INVALID_MESSAGE with this text, and it is all a
    client's author (or a user of ``keyclient``) gets to find what to fix."""
    with pytest.raises(InvalidMessage) as refused:
        parse_uid_message(mutate(server_message, path, value))
    assert str(refused.value).startswith(named)


def test_sigkey_equal_to_sigescrow_rejected(message):
    bad = mutate(message, ("content", "sigescrow"), message["content"]["sigkey"])
    with pytest.raises(InvalidMessage, match="differ"):
        parse_uid_message(bad)


def test_null_escrow_and_empty_lists_accepted(message):
    ok = mutate(mutate(message, ("content", "sigescrow"), None), ("escrowsignature",), "")
    parsed = parse_uid_message(ok)
    assert parsed.sigescrow is None and len(parsed.key_hashes) == 1


def _x25519_keys(count: int) -> list[dict]:
    return [{"function": "x25519",
             "pubkey": b64encode(nacl.bindings.crypto_scalarmult_base(bytes([i + 1] * 32)))}
            for i in range(count)]


@pytest.mark.parametrize("path,at_most,value", [
    (("content", "pubkeys"), _x25519_keys(8), _x25519_keys(9)),
    (("content", "repouris"), ["https://k.example"] * 4, ["https://k.example"] * 5),
    (("content", "preferences", "ciphersuites"), ["c"] * 8, ["c"] * 9),
    (("content", "preferences", "ciphersuites"), ["\U0001F600" * 64], ["\U0001F600" * 65]),
])
def test_list_bounds(message, path, at_most, value):
    """§4: pubkeys at most 8, repouris at most 4, ciphersuites at most 8 strings of at
    most 64 characters (code points, not bytes)."""
    parse_uid_message(mutate(message, path, at_most))
    with pytest.raises(InvalidMessage, match="at most"):
        parse_uid_message(mutate(message, path, value))


def test_list_bounds_come_before_any_key_is_parsed(message, monkeypatch):
    """The bounds are checked before the first weak-key check (§4: before any per-key
    cryptography), so an overlong list costs nothing per item; and an overlong list of
    garbage is refused for its length, not for its first bad item."""
    import client.protocol.keys as keys

    checked = []
    monkeypatch.setattr(keys, "is_weak_key", lambda *args: checked.append(args) or False)
    for path in [("content", "pubkeys"), ("content", "repouris"),
                 ("content", "preferences", "ciphersuites")]:
        with pytest.raises(InvalidMessage, match="at most"):
            parse_uid_message(mutate(message, path, [None] * 10_000))
    assert checked == []


def x25519_entry():
    return KeyEntry(X25519, bytes(nacl.signing.SigningKey.generate().to_curve25519_private_key()
                                  .public_key))


def updated(previous, old_key, new_key, **changes):
    """``previous``'s next message, signed by ``new_key`` and, as the update's
    usersignature, ``old_key``."""
    content = update_uid_content(previous, ed25519_entry(new_key), not_before_ts=3,
                                 not_after_ts=4, lastentry=bytes(32), **changes)
    return parse_uid_message(sign_uid_content(content, new_key, previous_sigkey=old_key))


def test_an_update_carries_over_all_it_does_not_change(keys):
    """``keyclient update`` changes the signing key and validity, and the encryption
    keys only when given: the rest of the identity's message stays as it was."""
    sigkey, escrow = keys
    pubkeys = [x25519_entry()]
    content = build_uid_content("alice@example.org", ed25519_entry(sigkey), msgcount=0,
                                not_before_ts=1, not_after_ts=2, lastentry=bytes(32),
                                sigescrow=ed25519_entry(escrow), pubkeys=pubkeys,
                                repouris=["https://k.example"], forwardsec="optional",
                                ciphersuites=["suite-a"], mixaddress="mix.example.org",
                                nymaddress=b"nym")
    previous = parse_uid_message(sign_uid_content(content, sigkey, escrow_key=escrow))
    new = nacl.signing.SigningKey.generate()
    same = updated(previous, sigkey, new)
    assert (same.msgcount, same.sigkey, same.not_before_ts) == (1, ed25519_entry(new), 3)
    for field in ("identity", "sigescrow", "pubkeys", "repouris", "forwardsec",
                  "ciphersuites", "mixaddress", "nymaddress"):
        assert getattr(same, field) == getattr(previous, field), field
    other = [x25519_entry()]
    assert updated(previous, sigkey, new, pubkeys=other).pubkeys == tuple(other)


def test_the_servers_update_keeps_its_policy_unless_given_a_new_one():
    """keyserver@'s renewal (same policy) and a token-key rotation (a new one)."""
    sigkey = nacl.signing.SigningKey.generate()
    policy = ServerPreferences(VerifierKey("example.org/keyserver", bytes(32)), (), 1000, 2000)
    content = build_uid_content("keyserver@example.org", ed25519_entry(sigkey), msgcount=0,
                                not_before_ts=1, not_after_ts=2, lastentry=bytes(32),
                                server=policy)
    previous = parse_uid_message(sign_uid_content(content, sigkey))

    def renewed(**changes):          # §11.2: the same sigkey
        return updated(previous, sigkey, sigkey, **changes)

    assert renewed().server == policy
    rotated = ServerPreferences(policy.log_vkey, (bytes(32),), 1000, 2000)
    assert renewed(server=rotated).server == rotated
    # The limits' bounds: no grace at all is a grace; a lifetime must be at least 1 ms.
    shortest = ServerPreferences(policy.log_vkey, (), 0, 1)
    assert renewed(server=shortest).server == shortest
    with pytest.raises(InvalidMessage, match="max_uid_lifetime_ms"):
        renewed(server=ServerPreferences(policy.log_vkey, (), 0, 0))

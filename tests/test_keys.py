"""Key entries and libsodium's rules for weak keys (§1, §3)."""

import re

import nacl.bindings
import nacl.public
import nacl.signing
import pytest

from client.protocol.encoding import b64encode
from client.protocol.errors import InvalidMessage
from client.protocol.keys import ED25519, X25519, _ED25519_SMALL_ORDER, is_weak_key, parse_key_entry

P = 2**255 - 19


def _sqrt(a):
    x = pow(a, (P + 3) // 8, P)
    if (x * x - a) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    return x if (x * x - a) % P == 0 else None


def test_small_order_blocklist_is_derived_from_the_curve():
    """Points of order 8 have y^2 = (-1 ± sqrt(1+d)) / d; with 0, 1, -1 and the
    non-canonical p, p+1 they are libsodium's seven blocked encodings."""
    d = -121665 * pow(121666, -1, P) % P
    root = _sqrt((1 + d) % P)
    ys = {0, 1, P - 1, P, P + 1}
    for sign in (1, -1):
        y = _sqrt((-1 + sign * root) * pow(d, -1, P) % P)
        if y is not None:
            ys |= {y, P - y}
    assert {y.to_bytes(32, "little") for y in ys} == _ED25519_SMALL_ORDER
    for encoded in _ED25519_SMALL_ORDER:
        assert not nacl.bindings.crypto_core_ed25519_is_valid_point(encoded)


@pytest.mark.parametrize("encoded", sorted(_ED25519_SMALL_ORDER))
@pytest.mark.parametrize("sign_bit", [0, 0x80])
def test_small_order_ed25519_keys_rejected(encoded, sign_bit):
    key = encoded[:31] + bytes([encoded[31] | sign_bit])
    assert is_weak_key(ED25519, key)
    with pytest.raises(InvalidMessage, match=re.escape("sigkey.pubkey: not a valid ed25519")):
        parse_key_entry({"function": "ed25519", "pubkey": b64encode(key)}, "sigkey", ED25519)


def test_non_canonical_ed25519_key_rejected():
    assert is_weak_key(ED25519, (P + 5).to_bytes(32, "little"))


def test_real_keys_accepted():
    for _ in range(20):
        pub = bytes(nacl.signing.SigningKey.generate().verify_key)
        assert parse_key_entry({"function": "ed25519", "pubkey": b64encode(pub)}, "k",
                               ED25519).pubkey == pub
        xpub = bytes(nacl.public.PrivateKey.generate().public_key)
        assert not is_weak_key(X25519, xpub)


@pytest.mark.parametrize("key", [bytes(32), (1).to_bytes(32, "little"),
                                 (P - 1).to_bytes(32, "little")])
def test_small_order_x25519_keys_rejected(key):
    with pytest.raises(InvalidMessage):
        parse_key_entry({"function": "x25519", "pubkey": b64encode(key)}, "pubkeys[0]", X25519)


@pytest.mark.parametrize("obj, error", [
    ({"function": "x25519", "pubkey": "A" * 43}, "content.sigkey.function: must be 'ed25519'"),
    ({"function": "ed25519"}, "content.sigkey: missing pubkey"),
    ({"function": "ed25519", "pubkey": "A" * 43, "extra": 1}, "content.sigkey: unknown extra"),
    ({"function": "ed25519", "pubkey": "AAAA"},
     "content.sigkey.pubkey: must encode 32 bytes, not 3"),
    ("ed25519", "content.sigkey: must be a JSON object"),
])
def test_malformed_entries(obj, error):
    """The error (the server's ``error`` text) names the member that is wrong."""
    with pytest.raises(InvalidMessage, match=re.escape(error)):
        parse_key_entry(obj, "content.sigkey", ED25519)

"""Key entries (§3) and the Ed25519/X25519 primitives behind them.

Verification follows libsodium (§1): PyNaCl rejects non-canonical signatures,
and key entries whose public key has small order are refused when parsed, so a
key that could verify forged signatures never enters a rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing

from .encoding import b64decode, b64encode, require_fields, sha256
from .errors import InvalidMessage

ED25519 = "ed25519"
X25519 = "x25519"
KEY_FIELDS = frozenset({"function", "pubkey"})

# Any clamped scalar works: multiplying a small-order point by it gives the
# identity, which libsodium refuses.
_PROBE_SCALAR = bytes([0x40] + [0x11] * 30 + [0x40])
_P = 2**255 - 19
# libsodium's blocklist: encodings of the Ed25519 points of small order, with
# the x sign bit cleared (tests/test_keys.py derives them from the curve).
_ED25519_SMALL_ORDER = frozenset(bytes.fromhex(h) for h in (
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
))


@dataclass(frozen=True)
class KeyEntry:
    function: str
    pubkey: bytes

    @property
    def hash(self) -> bytes:
        """SHA256(pubkey), the hash of a key entry (§3)."""
        return sha256(self.pubkey)

    def to_json(self) -> dict:
        return {"function": self.function, "pubkey": b64encode(self.pubkey)}


def is_weak_key(function: str, pubkey: bytes) -> bool:
    """True for keys libsodium refuses to verify or agree with: small order, and
    for Ed25519 also non-canonical encodings (y >= p)."""
    if function == ED25519:
        y = pubkey[:31] + bytes([pubkey[31] & 0x7F])
        return y in _ED25519_SMALL_ORDER or int.from_bytes(y, "little") >= _P
    try:
        nacl.bindings.crypto_scalarmult(_PROBE_SCALAR, pubkey)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.CryptoError):
        return True
    return False


def parse_key_entry(obj: Any, what: str, function: str) -> KeyEntry:
    """Parse a KeyEntry of the given function; a small-order key is ``InvalidMessage``."""
    require_fields(obj, KEY_FIELDS, what)
    if obj["function"] != function:
        raise InvalidMessage(f"{what}.function: must be {function!r}")
    pubkey = b64decode(obj["pubkey"], f"{what}.pubkey", length=32)
    if is_weak_key(function, pubkey):
        raise InvalidMessage(f"{what}.pubkey: not a valid {function} public key")
    return KeyEntry(function, pubkey)


def ed25519_entry(key: nacl.signing.SigningKey) -> KeyEntry:
    """The key entry (§3) that names a signing key's public half."""
    return KeyEntry(ED25519, bytes(key.verify_key))


def sign_detached(signing_key: nacl.signing.SigningKey, message: bytes) -> bytes:
    return signing_key.sign(message).signature


def verify_detached(pubkey: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature by ``pubkey`` (libsodium rules)."""
    try:
        nacl.signing.VerifyKey(pubkey).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
            nacl.exceptions.TypeError):
        return False
    return True

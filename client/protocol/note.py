"""Verifier keys of signed notes (C2SP ``signed-note``, the format of Go's
``golang.org/x/mod/sumdb/note``), as §8 names the log key with them:
``<name>+<hex key_hash>+<b64(0x01 || pubkey)>`` where
``key_hash = SHA256(name || "\\n" || 0x01 || pubkey)[0:4]``.

The log key is bound on the chain in ``preferences.server.log_vkey`` (§4), so a
client that verified the chain knows which key signs the log's checkpoints, and
so does any transparency tool given the same string.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from .encoding import sha256
from .errors import InvalidMessage

#: The signature type byte of Ed25519 note signatures (C2SP signed-note).
ALG_ED25519 = 0x01
#: The signature type byte of Ed25519 cosignatures (C2SP tlog-cosignature, §8.1).
ALG_COSIGNATURE = 0x04
KEY_HASH_SIZE = 4
#: A key name: non-empty, no whitespace and no "+" (C2SP signed-note).
_NAME = re.compile(r"[^\s+]+")


@dataclass(frozen=True)
class VerifierKey:
    """An Ed25519 note verifier key: whose it is (``name``), the key itself, and its
    signature type (a log's signatures, or a witness's cosignatures)."""

    name: str
    pubkey: bytes
    alg: int = ALG_ED25519

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.name, self.pubkey, self.alg)


def key_hash(name: str, pubkey: bytes, alg: int = ALG_ED25519) -> bytes:
    """The 4-byte id that names a key in signature lines (§8)."""
    return sha256(name.encode() + b"\n" + bytes([alg]) + pubkey)[:KEY_HASH_SIZE]


def format_verifier_key(key: VerifierKey) -> str:
    encoded = base64.b64encode(bytes([key.alg]) + key.pubkey).decode("ascii")
    return f"{key.name}+{key.key_hash.hex()}+{encoded}"


def parse_verifier_key(text: object, what: str = "verifier key",
                       error: type[Exception] = InvalidMessage,
                       alg: int = ALG_ED25519) -> VerifierKey:
    """A verifier key whose parts agree: a valid name, an Ed25519 key of 32 bytes
    after the type byte ``alg`` in standard padded base64, and the key hash that
    name, type and key give."""
    if not isinstance(text, str):
        raise error(f"{what}: must be a string")
    parts = text.split("+", 2)   # the base64 key may hold "+" itself
    if len(parts) != 3 or not _NAME.fullmatch(parts[0]) \
            or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
        raise error(f"{what}: expected <name>+<8 hex digits>+<base64 key>")
    try:
        raw = base64.b64decode(parts[2], validate=True)
    except (binascii.Error, ValueError):
        raise error(f"{what}: the key is not base64") from None
    if len(raw) != 33 or raw[0] != alg or base64.b64encode(raw).decode() != parts[2]:
        raise error(f"{what}: not an Ed25519 key (0x{alg:02x} and 32 bytes)")
    key = VerifierKey(parts[0], raw[1:], alg)
    if key.key_hash.hex() != parts[1]:
        raise error(f"{what}: the key hash does not match the name and key")
    return key

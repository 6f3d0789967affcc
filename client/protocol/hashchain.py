"""The key hashchain (§7): the 153-byte entry, its link hash, and identity search.

An entry hides its identity: only someone who knows the identity can recompute
``HashID`` from the entry's nonce and then open ``CrUID`` to learn the
UIDHash. The functions here are pure; they take bytes and return bytes or raise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import nacl.bindings
import nacl.exceptions

from .errors import ChainError

ENTRY_SIZE = 153
HASH_SIZE = 32
NONCE_SIZE = 8
ENTRY_TYPE = 0x01
ZERO_HASH = bytes(32)
K1_SIZE = 32
_AEAD_NONCE = bytes(24)
# CPython's own SHA-2 objects cost half as much per call as OpenSSL's through
# hashlib, and verifying and searching a chain make millions of tiny calls.
try:
    from _sha256 import sha256 as fast_sha256  # CPython 3.11
    from _sha512 import sha512 as fast_sha512
except ImportError:  # pragma: no cover - other Python versions
    try:
        from _sha2 import sha256 as fast_sha256, sha512 as fast_sha512  # CPython 3.12+
    except ImportError:
        fast_sha256, fast_sha512 = hashlib.sha256, hashlib.sha512


@dataclass(frozen=True)
class Entry:
    """A parsed entry: ``hash`` is H[n]; the rest are the fields it covers."""

    hash: bytes
    type: int
    nonce: bytes
    hash_id: bytes
    cr_uid: bytes
    uid_index: bytes

    @property
    def body(self) -> bytes:
        """TYPE || NONCE || HashID || CrUID || UIDIndex, hashed with H[n-1] to give H[n]."""
        return bytes([self.type]) + self.nonce + self.hash_id + self.cr_uid + self.uid_index


def derive_keys(nonce: bytes) -> tuple[bytes, bytes]:
    """k1, k2 = halves of SHA512(NONCE); k1 does not depend on the identity, so cache it."""
    k = hashlib.sha512(nonce).digest()
    return k[:32], k[32:]


def hash_id(k1: bytes, identity: str) -> bytes:
    return fast_sha256(k1 + identity.encode("utf-8")).digest()


def id_key(k2: bytes, identity: str) -> bytes:
    return fast_sha256(k2 + identity.encode("utf-8")).digest()


def format_entry(prev_hash: bytes, nonce: bytes, identity: str, uid_hash: bytes) -> bytes:
    """Build entry[n] for ``identity``'s UIDMessage with hash ``uid_hash`` after H[n-1]."""
    assert len(prev_hash) == HASH_SIZE and len(nonce) == NONCE_SIZE and len(uid_hash) == 32
    k1, k2 = derive_keys(nonce)
    head = bytes([ENTRY_TYPE]) + nonce + hash_id(k1, identity)
    cr_uid = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        uid_hash, head, _AEAD_NONCE, id_key(k2, identity)
    )
    body = head + cr_uid + fast_sha256(uid_hash).digest()
    return fast_sha256(body + prev_hash).digest() + body


def parse_entry(entry: bytes) -> Entry:
    if len(entry) != ENTRY_SIZE:
        raise ChainError(f"entry is {len(entry)} bytes, not {ENTRY_SIZE}")
    return Entry(entry[:32], entry[32], entry[33:41], entry[41:73], entry[73:121], entry[121:153])


def entry_hash(entry: bytes) -> bytes:
    """H[n] as the entry claims it (not verified)."""
    return entry[:HASH_SIZE]


def verify_entries(entries: Sequence[bytes], prev_hash: bytes, start: int = 0) -> bytes:
    """Check that ``entries`` at positions ``start..`` continue a chain whose last hash is
    ``prev_hash``; return the new last hash or raise ``ChainError`` at the first bad one.

    This loop is the client's hot path (a million entries per full sync), so it
    is written for speed rather than through ``parse_entry``.
    """
    sha = fast_sha256
    for offset, entry in enumerate(entries):
        if len(entry) != ENTRY_SIZE:
            raise ChainError(f"entry {start + offset}: {len(entry)} bytes, not {ENTRY_SIZE}",
                             position=start + offset)
        if entry[32] != ENTRY_TYPE:
            raise ChainError(f"entry {start + offset}: type {entry[32]:#04x}, not 0x01",
                             position=start + offset)
        digest = sha(entry[32:] + prev_hash).digest()
        if digest != entry[:32]:
            raise ChainError(f"entry {start + offset}: hash does not link to entry "
                             f"{start + offset - 1}", position=start + offset)
        prev_hash = digest
    return prev_hash


def open_entry(entry: bytes, identity: str, k1: bytes | None = None) -> bytes | None:
    """Return the UIDHash if ``entry`` belongs to ``identity``, else None.

    A matching HashID whose CrUID does not open, or whose UIDIndex does not fit
    the UIDHash, is an entry forged or broken by the server: ``ChainError``.
    """
    nonce = entry[33:41]
    if k1 is None:
        k1 = derive_keys(nonce)[0]
    if fast_sha256(k1 + identity.encode("utf-8")).digest() != entry[41:73]:
        return None
    k2 = derive_keys(nonce)[1]
    try:
        uid_hash = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            entry[73:121], entry[32:73], _AEAD_NONCE, id_key(k2, identity)
        )
    except nacl.exceptions.CryptoError:
        raise ChainError(f"entry for {identity} does not decrypt") from None
    if fast_sha256(uid_hash).digest() != entry[121:153]:
        raise ChainError(f"entry for {identity}: UIDIndex does not match its UIDHash")
    return uid_hash


def k1_values(block: bytes) -> bytes:
    """k1 of every entry in ``block`` (entries back to back, or a single entry),
    concatenated: the part of an identity search that does not depend on the
    identity, worth caching."""
    sha512 = fast_sha512
    return b"".join([sha512(block[i:i + NONCE_SIZE]).digest()[:K1_SIZE]
                     for i in range(33, len(block), ENTRY_SIZE)])


def search_identity(entries: Iterable[bytes], identity: str,
                    k1s: Iterable[bytes] | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield ``(position, UIDHash)`` for every entry of ``identity`` (§7.3), in order.

    ``k1s`` may supply cached k1 values aligned with ``entries``.
    """
    target = identity.encode("utf-8")
    sha = fast_sha256
    if k1s is None:
        k1s = (k1_values(entry) for entry in entries)
    for pos, (entry, k1) in enumerate(zip(entries, k1s)):
        if sha(k1 + target).digest() == entry[41:73]:
            uid_hash = open_entry(entry, identity, k1)
            if uid_hash is not None:
                yield pos, uid_hash

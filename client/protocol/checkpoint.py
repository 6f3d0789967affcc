"""Checkpoints (§8): C2SP ``tlog-checkpoint`` bodies in C2SP ``signed-note`` notes, the
format of Go's ``sumdb/note``, signed by the log key that the chain binds
(``preferences.server.log_vkey``):

    <origin>\\n<tree size>\\n<root hash, standard padded base64>\\n\\n— <key name> <b64(key_hash || signature)>\\n

Pure: format, sign, parse, and verify against a verifier key.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import nacl.signing

from .errors import VerificationError
from .keys import verify_detached
from .note import KEY_HASH_SIZE, VerifierKey

#: The signature line's prefix: an em dash and a space (C2SP signed-note).
DASH = "\u2014 "
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes


@dataclass(frozen=True)
class Signature:
    """One signature line of a note: whose (name and key hash) and the bytes after
    the key hash (an Ed25519 signature; a cosignature's timestamp and signature)."""

    name: str
    key_hash: bytes
    signature: bytes

    def line(self) -> str:
        return (f"{DASH}{self.name} "
                f"{base64.b64encode(self.key_hash + self.signature).decode()}\n")


@dataclass(frozen=True)
class Note:
    """A checkpoint with the signature lines it came with (none checked by parsing)."""

    checkpoint: Checkpoint
    body: bytes
    signatures: tuple[Signature, ...]

    def text(self) -> str:
        return self.body.decode() + "\n" + "".join(s.line() for s in self.signatures)


def format_checkpoint(checkpoint: Checkpoint) -> bytes:
    """The note body: the three lines with their final newline (what is signed)."""
    root = base64.b64encode(checkpoint.root_hash).decode()
    return f"{checkpoint.origin}\n{checkpoint.tree_size}\n{root}\n".encode()


def sign_checkpoint(checkpoint: Checkpoint, key: VerifierKey,
                    signing_key: nacl.signing.SigningKey) -> Note:
    """The checkpoint signed by the log key (whose name is the origin, §8)."""
    body = format_checkpoint(checkpoint)
    signature = signing_key.sign(body).signature
    return Note(checkpoint, body, (Signature(key.name, key.key_hash, signature),))


def parse_note(text: str | bytes) -> Note:
    """A checkpoint note, strictly: three body lines (origin, decimal size without
    leading zeros, a 32-byte root in padded base64), an empty line, then one or
    more signature lines ``— <name> <base64>``; anything else ``VerificationError``."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError:
            raise VerificationError("the checkpoint is not UTF-8") from None
    body, sep, rest = text.partition("\n\n")
    if not sep or not rest.endswith("\n"):
        raise VerificationError("the checkpoint is not a signed note (no signature block)")
    lines = body.split("\n")
    if len(lines) != 3 or not _SIZE.fullmatch(lines[1]) or not lines[0]:
        raise VerificationError("the checkpoint body is not <origin>, <size>, <root hash>")
    root = _b64(lines[2], "root hash")
    if len(root) != 32:
        raise VerificationError("the checkpoint's root hash is not 32 bytes")
    checkpoint = Checkpoint(lines[0], int(lines[1]), root)
    return Note(checkpoint, (body + "\n").encode(), parse_signature_lines(rest))


def parse_signature_lines(text: str) -> tuple[Signature, ...]:
    """One or more note signature lines ``— <name> <base64>``, each ending in a
    newline (a note's signature block, or a witness's answer, §8.1); anything else
    ``VerificationError``."""
    if not text.endswith("\n"):
        raise VerificationError("note signature lines must end with a newline")
    signatures = []
    for line in text[:-1].split("\n"):
        name, _, encoded = line[len(DASH):].partition(" ")
        if not line.startswith(DASH) or not name or " " in encoded:
            raise VerificationError(f"not a note signature line: {line!r}")
        raw = _b64(encoded, "signature")
        if len(raw) < KEY_HASH_SIZE + 1:
            raise VerificationError("a note signature is too short")
        signatures.append(Signature(name, raw[:KEY_HASH_SIZE], raw[KEY_HASH_SIZE:]))
    return tuple(signatures)


def _b64(value: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"the checkpoint's {what} is not base64") from None
    if base64.b64encode(raw).decode() != value:
        raise VerificationError(f"the checkpoint's {what} is not canonical base64")
    return raw


def verify_checkpoint(note: Note, key: VerifierKey) -> Checkpoint:
    """The note's checkpoint if ``key`` signed it and its origin is the key's name
    (§8: the key name equals the origin); else ``VerificationError``."""
    if note.checkpoint.origin != key.name:
        raise VerificationError(f"the checkpoint is for {note.checkpoint.origin!r}, not "
                                f"{key.name!r}")
    if signed_by(note, key):
        return note.checkpoint
    raise VerificationError(f"the checkpoint carries no valid signature by {key.name}")


def signed_by(note: Note, key: VerifierKey) -> bool:
    """Whether one of the note's signature lines is ``key``'s valid signature of its
    body; lines by other keys are ignored (C2SP signed-note), whatever their origin
    (a witness trusts keys per origin, §8.1, whose names need not be the origin)."""
    return any((signature.name, signature.key_hash) == (key.name, key.key_hash)
               and len(signature.signature) == 64
               and verify_detached(key.pubkey, note.body, signature.signature)
               for signature in note.signatures)

"""Witnessed checkpoints (§8.1): C2SP ``tlog-cosignature`` Ed25519 ``cosignature/v1``
signature lines, and the C2SP ``tlog-witness`` ``add-checkpoint`` exchange that asks
a witness for one.

A witness cosigns a log's checkpoint only when it is consistent with the last one it
cosigned for that log, so a log cannot get one witness to cosign two histories: a
client that asks for cosignatures by ``k`` witnesses it trusts sees the history
those witnesses saw. The cosignature carries the witness's clock (``timestamp``),
which also bounds the times the log writes into its replies (§7.3).

    — <witness name> <b64(key_id[4] || timestamp u64 big-endian || signature[64])>
    signed: "cosignature/v1\\ntime <timestamp>\\n" || <checkpoint note body>

Pure: format, sign, parse and verify.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass
from typing import Iterable

import nacl.signing

from .checkpoint import Note, Signature, parse_note
from .errors import BadRequest, VerificationError
from .keys import verify_detached
from .note import ALG_COSIGNATURE, VerifierKey

#: At most this many consistency-proof lines in an ``add-checkpoint`` body (C2SP).
MAX_PROOF_LINES = 63
#: The MIME type of a witness's "the size I hold" answer (409, C2SP tlog-witness).
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


def witness_name(server_name: str) -> str:
    """The name a keyserver witnesses under (§8.1)."""
    return f"{server_name}/witness"


def witness_vkey(name: str, signing_key: nacl.signing.SigningKey) -> VerifierKey:
    """The verifier key of a witness key: its name, public key and cosignature type."""
    return VerifierKey(name, bytes(signing_key.verify_key), ALG_COSIGNATURE)


def cosigned_message(body: bytes, timestamp: int) -> bytes:
    """What a ``cosignature/v1`` signs: the context line, the time line, the body."""
    return b"cosignature/v1\ntime %d\n" % timestamp + body


def cosign(body: bytes, witness: VerifierKey, signing_key: nacl.signing.SigningKey,
           timestamp: int) -> Signature:
    """The witness's cosignature of a checkpoint note body at ``timestamp`` (seconds)."""
    signature = signing_key.sign(cosigned_message(body, timestamp)).signature
    return Signature(witness.name, witness.key_hash, struct.pack(">Q", timestamp) + signature)


def check_cosignature(note: Note, witness: VerifierKey) -> int:
    """The timestamp of the note's valid cosignature by ``witness``; else
    ``VerificationError`` (none, or none that verifies)."""
    for signature in note.signatures:
        if (signature.name, signature.key_hash) != (witness.name, witness.key_hash) \
                or len(signature.signature) != 8 + 64:
            continue
        timestamp = struct.unpack(">Q", signature.signature[:8])[0]
        if verify_detached(witness.pubkey, cosigned_message(note.body, timestamp),
                           signature.signature[8:]):
            return timestamp
    raise VerificationError(f"the checkpoint carries no valid cosignature by {witness.name}")


@dataclass(frozen=True)
class AddCheckpoint:
    """An ``add-checkpoint`` request: the size the log believes the witness holds,
    the consistency proof from it, and the checkpoint note."""

    old: int
    proof: tuple[bytes, ...]
    note: Note


def format_add_checkpoint(old: int, proof: Iterable[bytes], note_text: str) -> bytes:
    """The request body: ``old <size>``, one base64 hash a line, an empty line, the note."""
    lines = [f"old {old}"] + [base64.b64encode(h).decode() for h in proof]
    return ("\n".join(lines) + "\n\n" + note_text).encode()


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """An ``add-checkpoint`` body, strictly; a malformed one is ``BadRequest`` (400).
    The note's signatures are not checked here."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise BadRequest("the request is not UTF-8") from None
    head, sep, note_text = text.partition("\n\n")
    if not sep:
        raise BadRequest("expected 'old <size>', proof lines, an empty line, a checkpoint")
    lines = head.split("\n")
    if not lines[0].startswith("old ") or not _DECIMAL.fullmatch(lines[0][4:]):
        raise BadRequest("the first line must be 'old <size>' in decimal")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise BadRequest(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = tuple(_hash(line) for line in lines[1:])
    try:
        note = parse_note(note_text)
    except VerificationError as exc:
        raise BadRequest(f"the checkpoint is malformed: {exc}") from None
    return AddCheckpoint(int(lines[0][4:]), proof, note)


def _hash(line: str) -> bytes:
    try:
        raw = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("a consistency proof line is not base64") from None
    if len(raw) != 32 or base64.b64encode(raw).decode() != line:
        raise BadRequest("a consistency proof line is not one hash in padded base64")
    return raw


def format_size(size: int) -> bytes:
    """The body of a 409: the size the witness holds, then a newline."""
    return b"%d\n" % size


def parse_size(body: bytes) -> int:
    """A 409 body; anything but a decimal and a newline is ``VerificationError``."""
    text = body.decode("ascii", "replace")
    if not text.endswith("\n") or not _DECIMAL.fullmatch(text[:-1]):
        raise VerificationError("the witness's size answer is not a decimal line")
    return int(text[:-1])


"""The witness (§8.1, C2SP ``tlog-witness``): this server cosigns a checkpoint of a log
it follows (``WITNESS_LOGS``) only when the checkpoint extends the last one it cosigned
for that log, so that the log cannot get it to cosign two histories (a split view).

Order of checks of ``add-checkpoint``: the body's shape (400) → a log it follows (404)
→ a valid signature by one of that log's keys, others ignored (403) → ``old`` at most
the checkpoint's size (400) → then in one write transaction, which serializes every
worker: ``old`` is the size it holds (else 409 with that size), the same size has the
same root (else 409), the consistency proof from the held checkpoint verifies (else
422), and the new checkpoint replaces the held one. Checking ``old`` and storing in one
transaction is what keeps two concurrent requests from rolling the held size back.
A request that the log signed and that contradicts what this witness holds (a proof
that fails, another root for the same size) is kept as evidence, in a transaction of
its own after the refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import nacl.signing

from client.protocol.checkpoint import Signature, signed_by
from client.protocol.cosignature import cosign, parse_add_checkpoint
from client.protocol.errors import BadRequest, InvalidSignature, NotFound, VerificationError
from client.protocol.merkle import check_consistency
from client.protocol.note import VerifierKey

from ..storage import witness as store
from ..storage.db import Database
from ..storage.witness import Witnessed
from .twophase import Write


class SizeMismatch(BadRequest):
    """409 (C2SP tlog-witness): ``old`` is not the size this witness holds for the log
    (``size``), or it is and the checkpoint has another root (``contradicts``: the log
    signed two trees of one size, kept as evidence). Answered as ``text/x.tlog.size``,
    so that the log can send again from ``size``."""

    def __init__(self, size: int, message: str, contradicts: bool = False):
        super().__init__(message, status=409)
        self.size, self.contradicts = size, contradicts


class ProofFailed(BadRequest):
    """422 (C2SP tlog-witness): the consistency proof does not show that the checkpoint
    extends the one this witness holds; kept as evidence (docs/decisions.md: errcode
    ``BAD_REQUEST``, §12 having none for 422)."""

    def __init__(self, message: str):
        super().__init__(message, status=422)


@dataclass(frozen=True)
class Witness:
    """This server as a witness: its name and verifier key (``<server_name>/witness``,
    type 0x04) and its key."""

    vkey: VerifierKey
    signing_key: nacl.signing.SigningKey


def add_checkpoint(write: Write, logs: Mapping[str, tuple[VerifierKey, ...]],
                   me: Witness, body: bytes, now: int) -> Signature:
    """``POST /witness/add-checkpoint``: this witness's cosignature of the checkpoint in
    ``body``, dated ``now`` (ms) in seconds, once it holds that checkpoint; else the
    typed refusal of the order of checks above."""
    request = parse_add_checkpoint(body)
    note, old = request.note, request.old
    checkpoint = note.checkpoint
    keys = logs.get(checkpoint.origin)
    if keys is None:
        raise NotFound(f"this witness does not follow the log {checkpoint.origin!r}")
    if not any(signed_by(note, key) for key in keys):
        raise InvalidSignature(f"no signature of a key of {checkpoint.origin!r} verifies",
                               status=403)
    if old > checkpoint.tree_size:
        raise BadRequest(f"old {old} is beyond the checkpoint's size {checkpoint.tree_size}")

    def accept(db: Database) -> None:
        held = store.latest(db, checkpoint.origin)
        size = 0 if held is None else held.tree_size
        if old != size:
            raise SizeMismatch(size, f"this witness holds size {size} of the log, not {old}")
        if held is not None and size == checkpoint.tree_size \
                and held.root_hash != checkpoint.root_hash:
            raise SizeMismatch(size, f"this witness holds another root for size {size}",
                               contradicts=True)
        try:
            check_consistency(size, checkpoint.tree_size,
                              b"" if held is None else held.root_hash, checkpoint.root_hash,
                              request.proof)
        except VerificationError as exc:
            raise ProofFailed(f"the consistency proof from {size} to "
                              f"{checkpoint.tree_size} does not verify: {exc}") from None
        store.save(db, Witnessed(checkpoint.origin, checkpoint.tree_size,
                                 checkpoint.root_hash, note.text(), now))

    try:
        write(accept)
    except (SizeMismatch, ProofFailed) as exc:
        if isinstance(exc, ProofFailed) or exc.contradicts:
            reason = exc.message
            write(lambda db: store.keep_evidence(db, checkpoint.origin, now, body, reason))
        raise
    return cosign(note.body, me.vkey, me.signing_key, now // 1000)

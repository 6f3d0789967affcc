"""The log's checkpoints as a client trusts them (§8): a checkpoint counts when the
log key signed it; its root must be the one this client computes from the entries
it verified, when it holds them; and every new checkpoint must extend the last one
this client verified of the server (a consistency proof, RFC 9162 §2.1.4). A
server that signed two checkpoints that do not extend each other, or a root that
is not its chain's, rewrote its history: both notes are the evidence
(``ServerCheating.notes``), as the server signed them. No I/O here.
"""

from __future__ import annotations

from typing import Sequence

from ..protocol.checkpoint import Checkpoint, Note, verify_checkpoint
from ..protocol.errors import VerificationError
from ..protocol.merkle import check_consistency, check_inclusion, leaf_hash
from ..protocol.note import VerifierKey
from ..protocol.wire import InclusionProof
from .evidence import ServerCheating


class HistoryRewritten(ServerCheating):
    """Two checkpoints signed by the server's log key that no honest log can both have
    signed: ``old`` (held from before) is not a prefix of ``new``, or ``new``'s root is
    not the one of the verified chain."""

    def __init__(self, reason: str, *notes: Note):
        super().__init__(f"this server is cheating: it rewrote the history of its log (§8):"
                         f" {reason}", notes=[note.text() for note in notes])


def check_checkpoint(note: Note, log_vkey: VerifierKey) -> Checkpoint:
    """The note's checkpoint if the log key signed it (``VerificationError`` else)."""
    return verify_checkpoint(note, log_vkey)


def check_root(note: Note, root: bytes) -> None:
    """``root``, computed from the verified chain's first ``tree_size`` entries, must
    be the checkpoint's: the server signed a tree that is not its chain's."""
    checkpoint = note.checkpoint
    if checkpoint.root_hash != root:
        raise HistoryRewritten(f"its checkpoint of tree size {checkpoint.tree_size} has a"
                               " root that is not the one of the verified chain's first"
                               f" {checkpoint.tree_size} entries", note)


def check_extends(old: Note, new: Note, proof: Sequence[bytes]) -> None:
    """``new`` must extend ``old`` (or, when smaller, be a prefix of it: an older
    checkpoint served again) as ``proof`` shows; else both are the evidence."""
    small, large = sorted((old, new), key=lambda note: note.checkpoint.tree_size)
    try:
        check_consistency(small.checkpoint.tree_size, large.checkpoint.tree_size,
                          small.checkpoint.root_hash, large.checkpoint.root_hash, proof)
    except VerificationError as exc:
        raise HistoryRewritten(
            f"the checkpoint of tree size {new.checkpoint.tree_size} it signed now is not "
            f"consistent with the one of tree size {old.checkpoint.tree_size} it signed "
            f"before ({exc})", old, new) from None


def check_leaf(entry: bytes, proof: InclusionProof | None, checkpoint: Checkpoint,
               pos: int) -> None:
    """The entry at ``pos`` is in the checkpoint's tree, as ``proof`` shows."""
    if proof is None:
        raise VerificationError(f"no checkpoint covers position {pos} yet: try again later,"
                                " or sync the whole chain")
    if (proof.leaf_index, proof.tree_size) != (pos, checkpoint.tree_size):
        raise VerificationError(f"the inclusion proof is for leaf {proof.leaf_index} of tree"
                                f" size {proof.tree_size}, not {pos} of "
                                f"{checkpoint.tree_size}")
    check_inclusion(leaf_hash(entry), pos, checkpoint.tree_size, checkpoint.root_hash,
                    proof.hashes)

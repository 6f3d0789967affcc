"""The log as far as a quorum of witnesses cosigned it (§8.1, §7.3). No I/O here.

A checkpoint and its consistency proofs show one client that the log only grew, not
that everyone sees the same log: the server may keep two histories and show each to
different people (a split view). A witness cosigns a checkpoint only when it extends
the last one that witness cosigned, so a tree that ``quorum`` of the witnesses the user
trusts cosigned is the one those witnesses saw. With a quorum set, a client trusts the
log up to the largest such tree only (``Witnessed``).

Only distinct witnesses the user configured count; cosignatures by anyone else are
ignored (C2SP ``tlog-cosignature``), and so are forged ones and those dated more than
``COSIGNATURE_FUTURE_MS`` after this client's clock (a witness clock that far ahead
would also stretch the bound below). A valid cosignature says the tree existed at its
``timestamp``: an entry in it dated more than ``COSIGNED_SLACK_MS`` later was dated in
the future by the server (``EntryAfterCosignature``, §7.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from ..protocol.checkpoint import Note
from ..protocol.cosignature import check_cosignature
from ..protocol.encoding import format_ms
from ..protocol.errors import VerificationError
from ..protocol.note import VerifierKey
from ..protocol.wire import UIDMessageReply
from .evidence import EntryAfterCosignature

#: A cosignature dated more than this after the client's clock is refused: it does not
#: count toward the quorum (witness and client clocks may differ by a little, not more).
COSIGNATURE_FUTURE_MS = 5 * 60 * 1000
#: §7.3: an entry's ``entry.ts`` may exceed the time a witness cosigned a tree
#: containing it by this much (clock skew between the server and the witness).
COSIGNED_SLACK_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class Cosigned:
    """Which of the trusted witnesses validly cosigned a checkpoint note, and why the
    others' cosignatures did not count (one line each, naming the witness)."""

    note: Note
    #: Witness name -> the timestamp (seconds) of its valid cosignature.
    cosigners: Mapping[str, int]
    refused: tuple[str, ...] = field(default=())

    @property
    def tree_size(self) -> int:
        return self.note.checkpoint.tree_size

    @property
    def cosigned_ts(self) -> int:
        """§7.3 ``W``: when the earliest of the cosigners saw the tree (milliseconds)."""
        return min(self.cosigners.values()) * 1000


def check_cosigners(note: Note, witnesses: Sequence[VerifierKey], now_ms: int) -> Cosigned:
    """The note's valid cosignatures by ``witnesses``, each witness (each key: a
    cosignature does not sign the witness's name) counted once; one dated more than
    ``COSIGNATURE_FUTURE_MS`` after ``now_ms``, or that does not verify, is refused
    and named."""
    cosigners: dict[str, int] = {}
    refused = []
    keys: set[bytes] = set()
    for witness in witnesses:
        if witness.pubkey in keys:
            continue
        try:
            timestamp = check_cosignature(note, witness)
        except VerificationError:
            if any((s.name, s.key_hash) == (witness.name, witness.key_hash)
                   for s in note.signatures):
                refused.append(f"the cosignature by {witness.name} does not verify")
            continue
        if timestamp * 1000 > now_ms + COSIGNATURE_FUTURE_MS:
            refused.append(f"the cosignature by {witness.name} is dated "
                           f"{format_ms(timestamp * 1000)}, more than "
                           f"{COSIGNATURE_FUTURE_MS // 60000} minutes in this client's future")
            continue
        cosigners[witness.name] = timestamp
        keys.add(witness.pubkey)
    return Cosigned(note, cosigners, tuple(refused))


def check_entry_times(replies: Iterable[UIDMessageReply], cosigned: Cosigned) -> None:
    """Every reply at a position inside the cosigned tree must be dated no later than
    ``COSIGNED_SLACK_MS`` after its earliest cosignature: the witness saw the entry
    then, so the server dated it in the future (``EntryAfterCosignature``, the reply
    and the cosigned note are the evidence)."""
    bound = cosigned.cosigned_ts + COSIGNED_SLACK_MS
    for reply in replies:
        entry = reply.entry
        if entry.hashchain_pos < cosigned.tree_size and entry.ts > bound:
            earliest = min(cosigned.cosigners, key=lambda name: cosigned.cosigners[name])
            raise EntryAfterCosignature(reply, cosigned.note.text(), earliest,
                                        cosigned.cosigned_ts, COSIGNED_SLACK_MS)

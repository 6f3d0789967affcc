"""Proof that a server cheats (§7.3): replies it signed validly, with the key the
chain gives their positions, that together break a rule an honest server keeps.
Such replies need no trust in the client to convince anyone: the session keeps
them, as signed, in the home's ``evidence`` table, and the command fails.

Four kinds are caught: times that decrease along the chain (``trust.ordering``),
an identity's history whose messages break §4 (``BrokenHistory``: a takeover of
a held identity, an update its previous keys did not sign), which the server must
have refused before appending them (§4.1, §4.2), a log whose history was
rewritten (``trust.checkpoints.HistoryRewritten``: the checkpoint notes the server
signed are the evidence, kept with the replies), and an entry dated after a witness
saw it (``EntryAfterCosignature``: the reply and the cosigned note, §7.3, §8.1).
No I/O here.
"""

from __future__ import annotations

from typing import Iterable

from ..protocol.encoding import format_ms
from ..protocol.errors import VerificationError
from ..protocol.wire import UIDMessageReply


class ServerCheating(VerificationError):
    """The server's own signed ``replies`` (or checkpoint ``notes``, §8) prove that it
    broke the protocol; they are the evidence, as the server signed them."""

    def __init__(self, message: str, replies: Iterable[UIDMessageReply] = (), *,
                 notes: Iterable[str] = (), position: int | None = None):
        super().__init__(message, position=position)
        self.replies = tuple(replies)
        self.notes = tuple(notes)


class BrokenHistory(ServerCheating):
    """Every reply of ``identity`` names its chain entry and is signed by the server
    key of its position, yet the messages do not form a valid §4 sequence (judged
    at the times §7.3 allows): the server appended what it had to refuse."""

    def __init__(self, identity: str, replies: Iterable[UIDMessageReply], reason: str):
        replies = tuple(replies)
        positions = ", ".join(str(reply.entry.hashchain_pos) for reply in replies)
        super().__init__(
            f"this server is cheating: it signed the history of {identity} (positions "
            f"{positions}), which breaks the rules it must check before appending (§4, "
            f"§7.3): {reason}", replies)


class EntryAfterCosignature(ServerCheating):
    """The server dated an entry (``reply``, signed) more than ``slack_ms`` after
    ``witness`` cosigned a tree that contains it (``note``, signed by the log key and
    cosigned at ``cosigned_ts``): the entry existed when the witness saw the tree, so
    its time is in the future (§7.3: a server must not gain by dating ahead)."""

    def __init__(self, reply: UIDMessageReply, note: str, witness: str, cosigned_ts: int,
                 slack_ms: int):
        entry = reply.entry
        super().__init__(
            f"this server is cheating: it dated the entry at position {entry.hashchain_pos}"
            f" {format_ms(entry.ts)}, more than {slack_ms // 60000} minutes after witness"
            f" {witness} cosigned a tree containing it ({format_ms(cosigned_ts)}) (§7.3)",
            [reply], notes=[note], position=entry.hashchain_pos)

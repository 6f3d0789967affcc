"""Proof that a server cheats (§7.3): replies it signed validly, with the key the
chain gives their positions, that together break a rule an honest server keeps.
Such replies need no trust in the client to convince anyone: the session keeps
them, as signed, in the home's ``evidence`` table, and the command fails.

Three kinds are caught: times that decrease along the chain (``trust.ordering``),
an identity's history whose messages break §4 (``BrokenHistory``: a takeover of
a held identity, an update its previous keys did not sign), which the server must
have refused before appending them (§4.1, §4.2), and a log whose history was
rewritten (``trust.checkpoints.HistoryRewritten``: the checkpoint notes the server
signed are the evidence, kept with the replies). No I/O here.
"""

from __future__ import annotations

from typing import Iterable

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
        self.identity = identity

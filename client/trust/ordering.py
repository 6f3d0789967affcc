"""Server times in order (§7.3, revision 2, "ordered"): across every reply a client
holds from one server, ``entry.ts`` never decreases as ``hashchain_pos`` grows.

The server chooses ``entry.ts``; an honest one takes it under the write lock as
``max(now, ts of the entry before)`` (§5), so it cannot decrease. Two validly signed
replies that decrease are therefore proof that the server cheats (for instance, an
entry dated in the future to make a takeover look like a reclaim after the grace),
and the pair is the evidence. No I/O: the session keeps the replies and the evidence.
"""

from __future__ import annotations

from typing import Iterable

from ..protocol.encoding import format_ms
from ..protocol.wire import UIDMessageReply
from .evidence import ServerCheating


class RepliesOutOfOrder(ServerCheating):
    """Two signed replies of one server whose times decrease along the chain."""

    def __init__(self, earlier: UIDMessageReply, later: UIDMessageReply):
        first, second = earlier.entry, later.entry
        super().__init__(
            f"this server is cheating: its signed reply for position {second.hashchain_pos}"
            f" is dated {format_ms(second.ts)}, before its reply for the earlier position"
            f" {first.hashchain_pos} ({format_ms(first.ts)}); an honest server's times never"
            " decrease along the chain", (earlier, later), position=second.hashchain_pos)


def check_ordered(replies: Iterable[UIDMessageReply]) -> None:
    """Raise ``RepliesOutOfOrder`` for the first decrease of ``entry.ts`` along the
    positions of ``replies``. Sorted by position, then time, adjacent pairs suffice:
    the earliest reply of a position meets the previous position's latest one."""
    ordered = sorted(replies, key=lambda reply: (reply.entry.hashchain_pos, reply.entry.ts))
    for earlier, later in zip(ordered, ordered[1:]):
        if later.entry.hashchain_pos > earlier.entry.hashchain_pos and \
                later.entry.ts < earlier.entry.ts:
            raise RepliesOutOfOrder(earlier, later)

"""The server's policy as its own entries on the chain record it (§4, §7.3, §10.4):
``preferences.server`` of every ``keyserver@`` message, with where and when it
took effect. Pure: ``trust.history`` builds it from verified messages.

Because the policy is on the chain, every client sees the same one, and sees every
change of it: the limits that judge an entry are those in force at its position
(a grace shortened later does not apply to what came before), and a token key
must have been visible to everyone for a day before a client buys with it (a key
made for one buyer would link that buyer's tokens to the voucher).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Sequence

from ..protocol.errors import VerificationError
from ..protocol.uidmessage import ServerPreferences, UIDMessage
from ..protocol.uidrules import Dated
from ..protocol.wire import Capabilities

DAY_MS = 24 * 3600 * 1000
#: §10.4: a client buys only with a token key listed at least this long.
TOKEN_KEY_MIN_LISTED_MS = DAY_MS
#: §10.4: more token-key changes than this within the window are worth a warning.
TOKEN_KEY_CHANGES_WARN = 4
TOKEN_KEY_CHANGES_WINDOW_MS = 30 * DAY_MS


@dataclass(frozen=True)
class PolicyAt:
    """``preferences.server`` of the ``keyserver@`` message at ``pos``, with its
    reply's ``entry.ts`` and its effective time (§7.3)."""

    pos: int
    ts: int
    effective_ts: int
    server: ServerPreferences


class ChainPolicy:
    """Every ``preferences.server`` the chain holds, in position order (the first at
    position 0, which §7.2 makes the server's own)."""

    def __init__(self, records: Sequence[PolicyAt]):
        if not records or records[0].pos != 0:
            raise ValueError("a chain's policy starts at position 0")
        self.records = tuple(records)
        self._positions = [record.pos for record in self.records]

    @property
    def current(self) -> ServerPreferences:
        return self.records[-1].server

    def _index(self, pos: int) -> int:
        return bisect.bisect_right(self._positions, pos) - 1

    def at(self, pos: int) -> ServerPreferences:
        """The policy in force at ``pos``: the latest ``keyserver@`` message at or
        before it."""
        return self.records[self._index(pos)].server

    def largest_grace(self, first: int, last: int) -> int:
        """The largest ``reclaim_grace_ms`` in force at any position of
        ``first .. last`` (§7.3: what a reclaim at ``last`` of a message at
        ``first`` must wait for)."""
        return max(record.server.reclaim_grace_ms
                   for record in self.records[self._index(first):self._index(last) + 1])

    def dated(self, history: Sequence[tuple[int, UIDMessage, int, int]]) -> list[Dated]:
        """An identity's messages, each ``(pos, message, entry.ts, effective ts)``,
        with the limits that judge them."""
        dated = []
        for index, (pos, message, ts, effective_ts) in enumerate(history):
            previous = history[index - 1][0] if index else pos
            dated.append(Dated(message, ts, effective_ts, self.largest_grace(previous, pos),
                               self.at(pos).max_uid_lifetime_ms))
        return dated

    def listed_since(self, key_id: bytes) -> int | None:
        """When ``key_id`` became listed without a break up to now (the effective
        time of the message that listed it, §10.4), or None when not listed now."""
        since = None
        for record in self.records:
            if key_id not in record.server.token_keys:
                since = None
            elif since is None:
                since = record.effective_ts
        return since

    def token_key_changes(self, since_ts: int) -> int:
        """How many ``keyserver@`` messages dated ``since_ts`` or later changed the
        set of token keys (§10.4's warning counts them)."""
        return sum(1 for before, after in zip(self.records, self.records[1:])
                   if after.ts >= since_ts
                   and set(after.server.token_keys) != set(before.server.token_keys))


def token_key_refusal(policy: ChainPolicy, key_id: bytes, not_after_ts: int,
                      now_ms: int) -> str | None:
    """Why a client must not buy tokens under ``key_id`` at ``now_ms`` (§10.4), in
    words for the user; None when it may."""
    since = policy.listed_since(key_id)
    if since is None:
        return ("the key is not listed on the chain, so other buyers may not see it: "
                "tokens under it could be linked to you")
    if now_ms - since < TOKEN_KEY_MIN_LISTED_MS:
        hours = (since + TOKEN_KEY_MIN_LISTED_MS - now_ms + 3599_999) // 3600_000
        return (f"the key was listed on the chain less than 24 hours ago, too recently for "
                f"everyone to have seen it; try again in about {hours} hour(s)")
    if not_after_ts <= now_ms:
        return "the key has expired"
    return None


def check_capabilities_policy(capabilities: Capabilities, policy: ChainPolicy) -> None:
    """Capabilities must state the policy the chain binds now (§7.3): the same time
    limits and the same log key. A server showing one client other limits than the
    chain records is caught here, before the client acts on them."""
    current = policy.current
    limits = capabilities.limits
    if (limits.reclaim_grace_ms, limits.max_uid_lifetime_ms) != \
            (current.reclaim_grace_ms, current.max_uid_lifetime_ms):
        raise VerificationError(
            f"the capabilities of {capabilities.server_name} state other limits than its "
            f"chain (reclaim_grace_ms {limits.reclaim_grace_ms} against "
            f"{current.reclaim_grace_ms}, max_uid_lifetime_ms {limits.max_uid_lifetime_ms} "
            f"against {current.max_uid_lifetime_ms}): this server is cheating")
    if capabilities.log_vkey != current.log_vkey:
        raise VerificationError(f"the capabilities of {capabilities.server_name} name another "
                                "log key than its chain: this server is cheating")

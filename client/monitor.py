"""Monitoring the user's own identities (§7.3 "Monitoring"): after every sync, each
new entry of an identity we hold replies for that this client did not write is
verified like a lookup, classified (``trust.monitor``) and kept in the home as an
alert until the user acknowledges it (an update they made on another device).

A victim learns of a takeover or a stolen key only this way: its own commands go
on working against the old entries, so nothing else would tell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Collection

from .clock import now_ms
from .protocol.errors import VerificationError
from .trust.monitor import Alert, check_entries

if TYPE_CHECKING:
    from .session import ServerSession


def check_own_identities(session: ServerSession, writing: Collection[int] = ()) -> list[Alert]:
    """Alert on every entry of our identities on ``session``'s synced chain that we
    neither wrote (a reply we hold, or a position in ``writing``: our entry being
    confirmed) nor alerted on before; return the new alerts (kept in the home).

    A history that fails to verify, as a forced takeover makes it, still alerts
    (kind ``unverifiable``): that is when it matters most."""
    known = session.home.monitored(session.server)
    found = session.search.search_many(known)
    alerts = []
    for identity, positions in known.items():
        new = [pos for pos, _ in found[identity] if pos not in positions and pos not in writing]
        if not new:
            continue
        try:
            result = session.lookup(identity)
        except VerificationError:
            result = None
        alerts += check_entries(session.server, identity, new, result)
    session.home.record_alerts(alerts, now_ms())
    return alerts

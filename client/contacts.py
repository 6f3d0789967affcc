"""Key continuity for the identities the user looks up (a messenger's "safety
number changed"): each lookup that shows an identity's keys (``keyclient lookup``,
and ``keyinit fetch`` before it uses them) compares the message shown with the one
this home last showed, names the entries since by kind (``trust.continuity``) and
remembers the new one, so each change is announced once.

The user's own identities are left to monitoring (``client.monitor``), which warns
about them until acknowledged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .clock import now_ms
from .trust.continuity import KeyChange, changes_since, current
from .trust.history import LookupResult

if TYPE_CHECKING:
    from .session import ServerSession


def key_changes(session: ServerSession, result: LookupResult) -> list[KeyChange]:
    """The entries of the looked-up identity of ``result`` since the message this
    home last showed of it on ``session``'s server (none on the first lookup, nor
    for one of the user's own identities); the current message is remembered as
    shown, so the caller must show the changes now."""
    home, server, identity = session.home, session.server, result.identity
    if identity in home.monitored(server):
        return []
    shown = home.shown(server, identity)
    changes = changes_since(shown, result)
    showing = current(result)
    if showing != shown:
        home.record_shown(server, identity, showing, now_ms())
    return changes

"""Key continuity for the identities the user looks up (§7.3; a messenger's "safety
number changed"): the home remembers the message it last showed of each, by chain
position and signing-key fingerprint, and a later lookup that shows another one
names every entry since by what authorized it: the kinds of ``trust.monitor``
(``update`` by the previous sigkey, ``recovery`` by the escrow key, ``new owner``
after a reclaim). Pure: the caller verified the history and keeps what was shown.

The user's own identities are not this module's: monitoring (``client.monitor``)
warns about every entry of theirs that the client did not make.
"""

from __future__ import annotations

from dataclasses import dataclass

from .history import Found, LookupResult
from .monitor import NEW_OWNER, classify, fingerprint


@dataclass(frozen=True)
class Shown:
    """The message of an identity the user was last shown: where the chain holds
    it and its signing key's fingerprint."""

    pos: int
    fingerprint: str

    @classmethod
    def of(cls, found: Found) -> Shown:
        return cls(found.pos, fingerprint(found.message.sigkey.pubkey))


@dataclass(frozen=True)
class KeyChange:
    """An entry of a looked-up identity after the message last shown: its position,
    what authorized it, its signing key's fingerprint and the one before it."""

    pos: int
    kind: str
    fingerprint: str
    previous: str

    @property
    def same_key(self) -> bool:
        """A renewal that kept the signing key."""
        return self.fingerprint == self.previous


def current(result: LookupResult) -> Shown:
    """What a lookup that found ``result`` shows."""
    return Shown.of(result.history[-1])


def changes_since(shown: Shown | None, result: LookupResult) -> list[KeyChange]:
    """The entries of ``result``'s verified history after the message last ``shown``,
    oldest first; none on the first lookup (``shown`` None: nothing to compare).

    Should the history not hold the message remembered (a home whose chain of this
    server was replaced), the current message counts as the one change if it is
    not the one remembered."""
    if shown is None:
        return []
    history = result.history
    at = [index for index, found in enumerate(history) if Shown.of(found) == shown]
    if not at:     # then the current message is not the one shown either
        latest = Shown.of(history[-1])
        return [KeyChange(latest.pos, classify(history[-1].message), latest.fingerprint,
                          shown.fingerprint)]
    changes = []
    previous = shown.fingerprint
    for found in history[at[0] + 1:]:
        new = Shown.of(found)
        changes.append(KeyChange(found.pos, classify(found.message), new.fingerprint, previous))
        previous = new.fingerprint
    return changes


def has_new_owner(changes: list[KeyChange]) -> bool:
    """Whether the name changed hands (a reclaim after expiry): the dangerous case, a
    different person may hold it now."""
    return any(change.kind == NEW_OWNER for change in changes)

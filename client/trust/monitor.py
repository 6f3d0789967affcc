"""Monitoring the user's own identities (§7.3 "Monitoring"): what an entry of one
of them that this client did not write means. Pure: the caller found the entries
and verified the identity's history.

A takeover or a stolen key shows first as such an entry, so each is named by what
authorized it: the previous sigkey (``update``, perhaps the user's other device),
the escrow key (``recovery``), nobody before (``new owner``, a msgcount 0 after a
reclaim), or nothing that verifies (``unverifiable``: the history itself fails,
as a server forcing a takeover makes it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..protocol.encoding import sha256
from ..protocol.uidmessage import UIDMessage
from .history import LookupResult

UPDATE = "update"
RECOVERY = "recovery"
NEW_OWNER = "new owner"
UNVERIFIABLE = "unverifiable"

#: Bytes of SHA256(pubkey) a fingerprint shows: enough to tell keys apart by eye.
FINGERPRINT_BYTES = 8


def fingerprint(pubkey: bytes) -> str:
    """A short fingerprint of a public key, for people to compare: the first
    ``FINGERPRINT_BYTES`` of its SHA256 in hex groups of two bytes."""
    digest = sha256(pubkey)[:FINGERPRINT_BYTES].hex()
    return " ".join(digest[i:i + 4] for i in range(0, len(digest), 4))


@dataclass(frozen=True)
class Alert:
    """An entry of our ``identity`` on ``server`` at ``pos`` that this client did not
    write; ``fingerprint`` is its new sigkey's (None when unverifiable)."""

    server: str
    identity: str
    pos: int
    kind: str
    fingerprint: str | None
    #: When the user acknowledged it (an update of theirs), None until then.
    acknowledged_ts: int | None = None


def classify(message: UIDMessage) -> str:
    """What authorized a verified ``message`` (§4): a create is a new owner, an
    update is signed by the previous sigkey or by the escrow key."""
    if message.msgcount == 0:
        return NEW_OWNER
    return UPDATE if message.usersignature else RECOVERY


def check_entries(server: str, identity: str, positions: Iterable[int],
                  result: LookupResult | None) -> list[Alert]:
    """An alert for each of ``identity``'s ``positions`` (entries we did not write),
    given its verified history (``result``; None when it failed to verify)."""
    messages = {found.pos: found.message for found in result.history} if result else {}
    alerts = []
    for pos in positions:
        message = messages.get(pos)
        alerts.append(Alert(server, identity, pos, UNVERIFIABLE, None) if message is None else
                      Alert(server, identity, pos, classify(message),
                            fingerprint(message.sigkey.pubkey)))
    return alerts

"""Payment for writes (§10): the one hook every paid operation calls.

``charge`` runs inside the write's transaction, at the token step of the order
of checks (§4.2.1), so a token it spends is only spent if the write commits.
Token redemption is not implemented yet: every operation is free for now,
and capabilities advertise prices of 0.
"""

from __future__ import annotations

from typing import Callable

import sqlite_utils


def charger(authorization: str | None) -> Callable[[sqlite_utils.Database, str], None]:
    """The charge function for one request (its ``Authorization`` header)."""

    def charge(db: sqlite_utils.Database, operation: str) -> None:
        """Redeem the request's token for ``operation``: free until tokens land."""

    return charge

"""Verify outside the write lock, decide inside: the one shape of every costly write
(CreateUID/UpdateUID §4.2.1, AddKeyInit §9, token issuing §10.3).

Signature checks and blind signatures take milliseconds; the write lock serializes
every writer of the instance. So the costly part runs first, against the state as
read without the lock, and the write job then decides against the state as it is
under the lock, reusing the verdict when that state is unchanged and verifying
again only when a racing write changed it. A verdict is a value (an error to raise
at its place in the order of checks, or a result), never raised by ``verify``
unless it must end the request before the write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from ..storage.db import Database

S = TypeVar("S")
V = TypeVar("V")
R = TypeVar("R")
T = TypeVar("T")

#: Runs a job as one atomic write (``storage.db.write`` in requests).
Write = Callable[[Callable[[Database], T]], T]


@dataclass(frozen=True)
class Verified(Generic[S, V]):
    """The verdict on the state read before the write lock."""

    seen: S
    verdict: V
    read: Callable[[Database], S]
    verify: Callable[[S], V]

    def recheck(self, db: Database) -> tuple[S, V]:
        """Inside the write: the state now, and the verdict on it (the one computed
        outside if the state is unchanged)."""
        state = self.read(db)
        return state, self.verdict if state == self.seen else self.verify(state)


def verify_then_decide(db: Database, write: Write, read: Callable[[Database], S],
                       verify: Callable[[S], V],
                       decide: Callable[[Database, Verified[S, V]], R]) -> R:
    """Read the state and ``verify`` against it outside the lock, then run
    ``decide(db, verified)`` as one write; ``decide`` calls ``verified.recheck``
    where the order of checks needs the verdict."""
    seen = read(db)
    verified = Verified(seen, verify(seen), read, verify)
    return write(lambda db: decide(db, verified))

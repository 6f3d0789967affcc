"""What the client trusts of a keyserver's hashchain (§7.5), without any I/O.

``ChainState`` holds the verified length and last hash; ``accept`` takes a
parsed chunk and either advances or raises. A chunk that does not continue the
verified chain is refused whole, so nothing unverified is ever kept. The checks
of a finished download against what the client already holds read entries
through a callable, so they never see the storage.
"""

from __future__ import annotations

from typing import Callable, Mapping

from ..protocol.errors import ChainError, VerificationError
from ..protocol.hashchain import ZERO_HASH, verify_entries
from ..protocol.wire import Chunk, Head


class ChainState:
    """The verified prefix of one server's chain: its length and last hash."""

    def __init__(self, length: int = 0, last_hash: bytes = ZERO_HASH):
        self.length = length
        self.last_hash = last_hash

    def accept(self, chunk: Chunk) -> list[bytes]:
        """Verify that ``chunk`` continues the chain; advance and return its entries."""
        if chunk.first_pos != self.length:
            raise ChainError(f"chunk starts at {chunk.first_pos}, expected {self.length}",
                             position=self.length)
        if chunk.head_pos < self.length - 1:
            # The server forgot entries we verified: a rollback or a fork.
            raise ChainError(f"server head {chunk.head_pos} is behind the verified chain "
                             f"of {self.length} entries", position=chunk.head_pos + 1)
        if chunk.head_pos < chunk.first_pos + len(chunk.entries) - 1:
            raise ChainError(f"chunk claims head {chunk.head_pos} before its own entries",
                             position=self.length)
        self.last_hash = verify_entries(chunk.entries, self.last_hash, self.length)
        self.length += len(chunk.entries)
        return chunk.entries


def check_expected(expect: Mapping[int, bytes], start: int, end: int,
                   entry_at: Callable[[int], bytes]) -> None:
    """Entries ``start..end-1`` just verified must be the ones the server's signed
    replies we hold promised at their positions (§7.5); ``entry_at`` reads one."""
    for pos, entry in sorted(expect.items()):
        if start <= pos < end and entry_at(pos) != entry:
            raise VerificationError(
                f"the chain holds another entry at position {pos} than the server's "
                "signed reply for it: the server rewrote history", position=pos)


def check_head(head: Head, length: int, entry_at: Callable[[int], bytes]) -> None:
    """A head the verified chain of ``length`` entries already covers must be the
    entry it holds there (else the server forked the chain without making it
    longer)."""
    if head.pos < length and entry_at(head.pos) != head.entry:
        raise ChainError(f"the server's head at position {head.pos} is not the entry the "
                         "verified chain holds there: a fork", position=head.pos)

"""What the client trusts of a keyserver's hashchain (§7.5), without any I/O.

``ChainState`` holds the verified length and last hash; ``accept`` takes a
parsed chunk and either advances or raises. A chunk that does not continue the
verified chain is refused whole, so nothing unverified is ever kept.
"""

from __future__ import annotations

from .protocol.errors import ChainError
from .protocol.hashchain import ZERO_HASH, verify_entries
from .protocol.wire import Chunk


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

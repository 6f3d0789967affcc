"""What the client trusts of a keyserver's hashchain (§7.5), without any I/O.

``ChainState`` holds the verified length and last hash; ``accept`` takes a
parsed chunk and either advances or raises. A chunk that does not continue the
verified chain is refused whole, so nothing unverified is ever kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import msgpack

from .protocol.encoding import b64decode
from .protocol.errors import ChainError, TransportError
from .protocol.hashchain import ZERO_HASH, verify_entries

MSGPACK = "application/msgpack"


@dataclass(frozen=True)
class Chunk:
    first_pos: int
    head_pos: int
    entries: list[bytes]


def _int(value, what: str) -> int:
    if type(value) is not int or value < -1:
        raise TransportError(f"hashchain chunk: {what} is not a position")
    return value


def parse_chunk(body: bytes, content_type: str) -> Chunk:
    """Parse a ``/v1/hashchain`` answer in either encoding; malformed is ``TransportError``."""
    try:
        if content_type == MSGPACK:
            obj = msgpack.unpackb(body, raw=False, strict_map_key=True)
            entries = obj["entries"]
            if not isinstance(entries, list) or not set(map(type, entries)) <= {bytes}:
                raise TransportError("hashchain chunk: entries must be binary")
        else:
            obj = json.loads(body)
            # Wrong lengths are left to verify_entries, which names the position.
            entries = [b64decode(e, "entry", error=TransportError) for e in obj["entries"]]
        return Chunk(_int(obj["first_pos"], "first_pos"), _int(obj["head_pos"], "head_pos"),
                     entries)
    except TransportError:
        raise
    except Exception as exc:
        raise TransportError(f"hashchain chunk is malformed: {exc}") from exc


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

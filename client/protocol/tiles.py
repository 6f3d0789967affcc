"""The log as C2SP ``tlog-tiles`` (§8): the static read API of Go's ``tlog``,
Sunlight and Tessera, which a client (or any transparency tool) reads from the
server or from a static copy of it.

Tiles have height 8. Hash tile ``L/N`` is the concatenation of the hashes of the
tree's nodes at level ``8L`` with indexes ``256N .. 256N+W-1`` (``merkle``'s
``node(level, index)``); entry bundle ``N`` holds entries ``256N .. 256N+W-1``,
each as ``uint16 big-endian length || entry``. A tile of 256 items is full and
never changes; ``.p/W`` names a partial one of ``W`` (1..255) items. ``N`` is
written as 3-digit groups, every group but the last prefixed by ``x``
(``1234067`` -> ``x001/x234/067``).

``format_tile_path``/``parse_tile_path`` are the paths (parsed strictly: one
spelling per tile), ``tiles_for_size`` the tiles a tree of some size is read
from, and ``format_x``/``parse_x`` the contents' layout.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Sequence

from .errors import BadRequest, VerificationError
from .merkle import HASH_SIZE

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
#: Hash tiles of levels 0..63 cover every tree a 64-bit size can hold (Go's tlog).
MAX_LEVEL = 63
#: An entry's length prefix (uint16 big-endian).
_LENGTH = struct.Struct(">H")

_LEVEL = re.compile(r"0|[1-9][0-9]?")
_GROUP = re.compile(r"[0-9]{3}")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")


@dataclass(frozen=True)
class Tile:
    """Hash tile ``level``/``index`` (``level`` None: the entry bundle ``index``) of
    ``width`` items (``TILE_WIDTH``: full)."""

    level: int | None
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self):
        if self.level is not None and not 0 <= self.level <= MAX_LEVEL:
            raise ValueError(f"no tile level {self.level}")
        if self.index < 0 or not 1 <= self.width <= TILE_WIDTH:
            raise ValueError(f"no tile {self.index} of width {self.width}")

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def node_level(self) -> int:
        """The tree level of a hash tile's nodes."""
        assert self.level is not None, "an entry bundle holds entries, not nodes"
        return TILE_HEIGHT * self.level

    @property
    def first(self) -> int:
        """The index of its first node (or entry)."""
        return self.index * TILE_WIDTH


def format_tile_path(tile: Tile) -> str:
    """``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]`` (no leading slash)."""
    groups = []
    n = tile.index
    while True:
        n, rest = divmod(n, 1000)
        groups.append(f"{rest:03d}")
        if n == 0:
            break
    index = "/".join("x" + group for group in reversed(groups[1:]))
    index = f"{index}/{groups[0]}" if index else groups[0]
    level = "entries" if tile.level is None else str(tile.level)
    partial = "" if tile.full else f".p/{tile.width}"
    return f"tile/{level}/{index}{partial}"


def parse_tile_path(path: str) -> Tile:
    """The tile a path names (with or without its leading slash); anything but the
    one spelling ``format_tile_path`` gives is ``BadRequest``."""
    parts = path.removeprefix("/").split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise BadRequest(f"{path!r} is not a tile path")
    level_text, groups = parts[1], parts[2:]
    if level_text == "entries":
        level = None
    elif _LEVEL.fullmatch(level_text) and int(level_text) <= MAX_LEVEL:
        level = int(level_text)
    else:
        raise BadRequest(f"tile level {level_text!r} is not 0..{MAX_LEVEL} or 'entries'")
    width = TILE_WIDTH
    if len(groups) >= 2 and groups[-2].endswith(".p"):
        if not _WIDTH.fullmatch(groups[-1]) or int(groups[-1]) >= TILE_WIDTH:
            raise BadRequest(f"partial tile width {groups[-1]!r} is not 1..{TILE_WIDTH - 1}")
        width = int(groups[-1])
        groups = groups[:-2] + [groups[-2][:-2]]
    *upper, last = groups
    if not all(g.startswith("x") and _GROUP.fullmatch(g[1:]) for g in upper) \
            or not _GROUP.fullmatch(last) or (upper and upper[0] == "x000"):
        raise BadRequest(f"tile index {'/'.join(groups)!r} is not written as 3-digit groups "
                         "(x-prefixed but the last, no leading x000)")
    index = int("".join(g[1:] for g in upper) + last)
    if index.bit_length() > 64:
        raise BadRequest(f"tile index {index} is too large")
    return Tile(level, index, width)


def level_width(level: int | None, size: int) -> int:
    """How many items a tree of ``size`` leaves has for tiles of ``level``: its
    entries, or its complete nodes at tree level ``8 * level``."""
    return size if level is None else size >> (TILE_HEIGHT * level)


def tile_in_tree(tile: Tile, size: int) -> bool:
    """Whether the tree of ``size`` leaves holds every item of ``tile`` (its contents
    are then fixed for ever: the log only grows)."""
    return tile.first + tile.width <= level_width(tile.level, size)


def tiles_for_size(size: int) -> list[Tile]:
    """Every tile the tree of ``size`` leaves is read from: the full tiles of each
    level and, where a level ends inside a tile, that partial tile; hash tiles by
    level, then the entry bundles."""
    tiles = []
    levels = [level for level in range(MAX_LEVEL + 1) if level_width(level, size)]
    for level in [*levels, None]:
        full, rest = divmod(level_width(level, size), TILE_WIDTH)
        tiles += [Tile(level, index) for index in range(full)]
        if rest:
            tiles.append(Tile(level, full, rest))
    return tiles


def format_hash_tile(hashes: Sequence[bytes]) -> bytes:
    assert all(len(h) == HASH_SIZE for h in hashes) and 1 <= len(hashes) <= TILE_WIDTH
    return b"".join(hashes)


def parse_hash_tile(data: bytes, tile: Tile) -> list[bytes]:
    """The hashes of a fetched hash tile, which must hold exactly ``tile.width``."""
    if len(data) != tile.width * HASH_SIZE:
        raise VerificationError(f"{format_tile_path(tile)}: {len(data)} bytes, not "
                                f"{tile.width} hashes")
    return [data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def format_entry_bundle(entries: Sequence[bytes]) -> bytes:
    assert 1 <= len(entries) <= TILE_WIDTH
    return b"".join(_LENGTH.pack(len(entry)) + entry for entry in entries)


def parse_entry_bundle(data: bytes, tile: Tile) -> list[bytes]:
    """The entries of a fetched entry bundle, which must hold exactly ``tile.width``."""
    entries, offset = [], 0
    while offset < len(data):
        if offset + _LENGTH.size > len(data):
            raise VerificationError(f"{format_tile_path(tile)}: cut inside a length")
        (length,), offset = _LENGTH.unpack_from(data, offset), offset + _LENGTH.size
        if offset + length > len(data):
            raise VerificationError(f"{format_tile_path(tile)}: cut inside an entry")
        entries.append(data[offset:offset + length])
        offset += length
    if len(entries) != tile.width:
        raise VerificationError(f"{format_tile_path(tile)}: {len(entries)} entries, not "
                                f"{tile.width}")
    return entries

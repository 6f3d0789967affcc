"""The log as C2SP ``tlog-tiles`` (§8): hash tiles read from the stored tree, entry
bundles read from the chain, and the newest checkpoint, for the tree of the newest
checkpoint only (what a tiles client reads is the tree of a checkpoint it holds), so
that the server's tiles, the checkpoint it serves and ``keyserver tiles export``
always agree. Tiles beyond that tree are ``NotFound``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from client.protocol.errors import NotFound
from client.protocol.hashchain import ENTRY_SIZE
from client.protocol.merkle import HASH_SIZE
from client.protocol.tiles import (TILE_WIDTH, Tile, format_entry_bundle, format_hash_tile,
                                   format_tile_path, tile_in_tree, tiles_for_size)

from ..storage import chain, checkpoints
from ..storage.checkpoints import StoredCheckpoint
from ..storage.db import Database
from ..storage.tree import TreeReader


def newest_checkpoint(db: Database) -> StoredCheckpoint:
    """The checkpoint whose tree the tiles serve; ``NotFound`` before the first."""
    newest = checkpoints.newest(db)
    if newest is None:
        raise NotFound("no checkpoint yet")
    return newest


def read_tile(db: Database, tile: Tile, size: int) -> bytes:
    """The contents of ``tile`` if the tree of ``size`` leaves holds all of it."""
    if not tile_in_tree(tile, size):
        raise NotFound(f"{format_tile_path(tile)} is not in the tree of size {size}")
    if tile.level is None:
        items = chain.read_entries(db, tile.first, tile.width)
        data = format_entry_bundle(items)
    else:
        items = TreeReader(db).nodes(tile.node_level, tile.first, tile.width)
        data = format_hash_tile(items)
    if len(items) != tile.width:
        raise RuntimeError(f"{format_tile_path(tile)}: {len(items)} of {tile.width} items "
                           "stored (run keyserver chain verify)")
    return data


@dataclass(frozen=True)
class Export:
    tree_size: int
    written: int
    kept: int


def export(db: Database, folder: str) -> Export:
    """Write every tile of the newest checkpoint's tree, and then that checkpoint as
    ``checkpoint``, under ``folder`` (created), as a static web server would serve
    them. A full tile already there with its full length is kept (full tiles never
    change); partial tiles and the checkpoint are always rewritten, each atomically,
    the checkpoint last, so a reader never sees a checkpoint before its tiles."""
    newest = newest_checkpoint(db)
    written = kept = 0
    for tile in tiles_for_size(newest.tree_size):
        path = os.path.join(folder, *format_tile_path(tile).split("/"))
        if tile.full and _has_size(path, _full_size(tile)):
            kept += 1
            continue
        _write(path, read_tile(db, tile, newest.tree_size))
        written += 1
    _write(os.path.join(folder, "checkpoint"), newest.note.encode())
    return Export(newest.tree_size, written, kept)


def _full_size(tile: Tile) -> int:
    """The bytes of a full tile: 256 hashes, or 256 length-prefixed entries (§8)."""
    item = HASH_SIZE if tile.level is not None else 2 + ENTRY_SIZE
    return TILE_WIDTH * item


def _has_size(path: str, size: int) -> bool:
    try:
        return os.path.getsize(path) == size
    except OSError:
        return False


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)

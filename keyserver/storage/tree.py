"""Storage of the Merkle tree over the chain (§8): every complete subtree's hash,
by level and index, as Go's ``tlog`` stores them (a hash tile is 256 consecutive
nodes of one level). ``add_leaf`` runs in the append's transaction and writes
O(log n) rows; ``TreeReader`` answers ``client.protocol.merkle``'s provers with
O(log n) reads, so nothing is ever rebuilt. SQL only.
"""

from __future__ import annotations

from client.protocol.merkle import leaf_hash, node_hash

from .db import Database


class TreeReader:
    """``merkle.HashReader`` over the stored nodes."""

    def __init__(self, db: Database):
        self.db = db

    def node(self, level: int, index: int) -> bytes:
        row = self.db.conn.execute("SELECT hash FROM tree_nodes WHERE level = ? AND idx = ?",
                                   (level, index)).fetchone()
        if row is None:
            raise LookupError(f"no tree node at level {level}, index {index}")
        return row[0]

    def nodes(self, level: int, first: int, count: int) -> list[bytes]:
        """``count`` consecutive nodes of ``level`` from ``first`` (a hash tile)."""
        return [row[0] for row in self.db.conn.execute(
            "SELECT hash FROM tree_nodes WHERE level = ? AND idx >= ? AND idx < ?"
            " ORDER BY idx", (level, first, first + count))]


def add_leaf(db: Database, pos: int, entry: bytes) -> None:
    """Store leaf ``pos`` and every subtree it completes (its left siblings are
    stored already: the leaves before it are)."""
    hash_, level, index = leaf_hash(entry), 0, pos
    rows = [(0, pos, hash_)]
    while index & 1:
        hash_ = node_hash(TreeReader(db).node(level, index - 1), hash_)
        level, index = level + 1, index >> 1
        rows.append((level, index, hash_))
    db.conn.executemany("INSERT INTO tree_nodes (level, idx, hash) VALUES (?, ?, ?)", rows)


def size(db: Database) -> int:
    """How many leaves the stored tree holds."""
    row = db.conn.execute("SELECT max(idx) FROM tree_nodes WHERE level = 0").fetchone()
    return 0 if row[0] is None else row[0] + 1


def backfill(db: Database) -> int:
    """Add the leaves of entries appended before the tree was stored (an instance
    from before it existed); return how many. In ``transaction``."""
    start = size(db)
    rows = db.conn.execute("SELECT pos, entry FROM chain WHERE pos >= ? ORDER BY pos",
                           (start,)).fetchall()
    for pos, entry in rows:
        add_leaf(db, pos, entry)
    return len(rows)

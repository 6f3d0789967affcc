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
    """``merkle.HashReader`` over the stored nodes; ``load`` reads many in one query."""

    def __init__(self, db: Database):
        self.db = db
        self.loaded: dict[tuple[int, int], bytes] = {}

    def node(self, level: int, index: int) -> bytes:
        if (level, index) in self.loaded:
            return self.loaded[level, index]
        row = self.db.conn.execute("SELECT hash FROM tree_nodes WHERE level = ? AND idx = ?",
                                   (level, index)).fetchone()
        if row is None:
            raise LookupError(f"no tree node at level {level}, index {index}")
        return row[0]

    def load(self, wanted: list[tuple[int, int]]) -> None:
        """Read the nodes ``wanted`` (level, index) in one query per 200 (each a search of
        the primary key: SQLite's OR optimization), for ``node`` to answer from."""
        wanted = list(dict.fromkeys(wanted))
        for first in range(0, len(wanted), 200):
            part = wanted[first:first + 200]
            where = " OR ".join(["(level = ? AND idx = ?)"] * len(part))
            for level, index, hash_ in self.db.conn.execute(
                    f"SELECT level, idx, hash FROM tree_nodes WHERE {where}",
                    [value for pair in part for value in pair]):
                self.loaded[level, index] = hash_

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


class BadNode(Exception):
    """A stored tree node that is missing, extra or not the hash of what it covers."""

    def __init__(self, level: int, index: int, problem: str):
        super().__init__(f"tree node at level {level}, index {index}: {problem}")
        self.level, self.index = level, index


def verify_stored(db: Database, length: int, batch: int = 65_536) -> None:
    """Recompute the tree of the chain's first ``length`` entries from them, in
    batches: every leaf hash from its entry, every stored node from the two below it,
    and that exactly the complete subtrees are stored; raise ``BadNode`` naming the
    first bad node (lowest level, then index)."""
    assert batch % 2 == 0
    for start in range(0, max(length, 1), batch):
        entries = db.conn.execute(
            "SELECT pos, CAST(entry AS BLOB) FROM chain WHERE pos >= ? AND pos < ? ORDER BY pos",
            (start, min(start + batch, length))).fetchall()
        _compare(db, 0, start, [leaf_hash(entry) for _, entry in entries],
                 min(batch, length - start))
    level, count = 1, length >> 1
    while count:
        for start in range(0, count, batch):
            below = TreeReader(db).nodes(level - 1, 2 * start, 2 * min(batch, count - start))
            _compare(db, level, start, [node_hash(below[i], below[i + 1])
                                        for i in range(0, len(below), 2)],
                     min(batch, count - start))
        level, count = level + 1, count >> 1
    _check_nothing_beyond(db, length)


def _compare(db: Database, level: int, start: int, computed: list[bytes], count: int) -> None:
    """The stored nodes ``start .. start+count-1`` of ``level`` are ``computed``."""
    stored = dict(db.conn.execute(
        "SELECT idx, hash FROM tree_nodes WHERE level = ? AND idx >= ? AND idx < ?",
        (level, start, start + count)))
    for index in range(start, start + count):
        if index not in stored:
            raise BadNode(level, index, "missing")
        if index - start >= len(computed):
            # The chain check reports a missing entry first; be safe anyway.
            raise BadNode(level, index, "covers entries the chain does not hold")
        if stored[index] != computed[index - start]:
            raise BadNode(level, index, "not the hash of the entries it covers")


def _check_nothing_beyond(db: Database, length: int) -> None:
    """No level holds a node past the last complete subtree of ``length`` leaves."""
    for level, index in db.conn.execute(
            "SELECT level, max(idx) FROM tree_nodes GROUP BY level ORDER BY level"):
        if index >= length >> level:
            extra = length >> level
            first = db.conn.execute("SELECT min(idx) FROM tree_nodes WHERE level = ? AND idx >= ?",
                                    (level, extra)).fetchone()[0]
            raise BadNode(level, first, f"beyond the tree of the chain's {length} entries")

"""Storage of the checkpoints the server made (§8): one signed note per tree size it
was made for, kept for ever, read back with the witnesses' cosignatures stored for
it (§8.1, ``cosignatures``) appended, as it is served. SQL only."""

from __future__ import annotations

from dataclasses import dataclass

from .db import Database


@dataclass(frozen=True)
class StoredCheckpoint:
    tree_size: int
    #: The note as served: the log's signature, then the stored cosignatures.
    note: str
    created_ts: int


def insert(db: Database, checkpoint: StoredCheckpoint) -> None:
    db.conn.execute("INSERT INTO checkpoints (tree_size, note, created_ts) VALUES (?, ?, ?)",
                    (checkpoint.tree_size, checkpoint.note, checkpoint.created_ts))


def _served(db: Database, which: str, *args: int) -> StoredCheckpoint | None:
    """The one checkpoint the clause ``which`` (over ``checkpoints``) selects, with
    its cosignatures in one query: a row per cosignature, in witness order."""
    rows = db.conn.execute(
        "SELECT c.tree_size, c.note, c.created_ts, s.line FROM (SELECT tree_size, note,"
        f" created_ts FROM checkpoints {which}) AS c LEFT JOIN cosignatures AS s"
        " ON s.tree_size = c.tree_size ORDER BY s.witness", args).fetchall()
    if not rows:
        return None
    tree_size, note, created_ts, _ = rows[0]
    return StoredCheckpoint(tree_size, note + "".join(row[3] or "" for row in rows),
                            created_ts)


def newest(db: Database) -> StoredCheckpoint | None:
    return _served(db, "ORDER BY tree_size DESC LIMIT 1")


def newest_size(db: Database) -> int | None:
    """The newest checkpoint's tree size, from the checkpoints alone (also in a
    database made before cosignatures were stored)."""
    return db.conn.execute("SELECT MAX(tree_size) FROM checkpoints").fetchone()[0]


def of_size(db: Database, tree_size: int) -> StoredCheckpoint | None:
    return _served(db, "WHERE tree_size = ?", tree_size)


def covering(db: Database, pos: int) -> StoredCheckpoint | None:
    """The earliest checkpoint whose tree contains position ``pos``."""
    return _served(db, "WHERE tree_size > ? ORDER BY tree_size LIMIT 1", pos)


def with_quorum(db: Database, quorum: int) -> StoredCheckpoint | None:
    """The newest checkpoint with at least ``quorum`` (> 0) cosignatures stored."""
    return _served(db, "WHERE tree_size = (SELECT tree_size FROM cosignatures GROUP BY"
                       " tree_size HAVING COUNT(*) >= ? ORDER BY tree_size DESC LIMIT 1)",
                   quorum)

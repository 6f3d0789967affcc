"""Storage of the checkpoints the server made (§8): one signed note per tree size it
was made for, kept for ever (witnesses' cosignatures will be stored beside them).
SQL only."""

from __future__ import annotations

from dataclasses import dataclass

from .db import Database


@dataclass(frozen=True)
class StoredCheckpoint:
    tree_size: int
    note: str
    created_ts: int


_COLUMNS = "SELECT tree_size, note, created_ts FROM checkpoints"


def insert(db: Database, checkpoint: StoredCheckpoint) -> None:
    db.conn.execute("INSERT INTO checkpoints (tree_size, note, created_ts) VALUES (?, ?, ?)",
                    (checkpoint.tree_size, checkpoint.note, checkpoint.created_ts))


def newest(db: Database) -> StoredCheckpoint | None:
    row = db.conn.execute(f"{_COLUMNS} ORDER BY tree_size DESC LIMIT 1").fetchone()
    return StoredCheckpoint(*row) if row else None


def of_size(db: Database, tree_size: int) -> StoredCheckpoint | None:
    row = db.conn.execute(f"{_COLUMNS} WHERE tree_size = ?", (tree_size,)).fetchone()
    return StoredCheckpoint(*row) if row else None


def covering(db: Database, pos: int) -> StoredCheckpoint | None:
    """The earliest checkpoint whose tree contains position ``pos``."""
    row = db.conn.execute(f"{_COLUMNS} WHERE tree_size > ? ORDER BY tree_size LIMIT 1",
                          (pos,)).fetchone()
    return StoredCheckpoint(*row) if row else None

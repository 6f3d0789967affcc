"""Storage of the hashchain (§7): the one append path, reads, and a full re-check.

``append`` must run inside ``db.transaction``: the write lock makes the head it
reads the head it extends, so positions stay dense and links stay valid.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

import sqlite_utils

from client.errors import ChainError
from client.hashchain import ZERO_HASH, format_entry, verify_entries


@dataclass(frozen=True)
class Head:
    pos: int
    entry: bytes
    ts: int

    @property
    def hash(self) -> bytes:
        return self.entry[:32]


def head(db: sqlite_utils.Database) -> Head | None:
    row = db.conn.execute(
        "SELECT pos, entry, ts FROM chain ORDER BY pos DESC LIMIT 1").fetchone()
    return Head(*row) if row else None


def append(db: sqlite_utils.Database, identity: str, uid_hash: bytes, now: int,
           last: Head | None = None) -> Head:
    """Append the entry of ``identity``'s UIDMessage with hash ``uid_hash`` after
    ``last``, the head if the caller read it in this transaction."""
    assert db.conn.in_transaction, "append runs inside db.transaction"
    if last is None:
        last = head(db)
    pos, prev = (last.pos + 1, last.hash) if last else (0, ZERO_HASH)
    while True:
        nonce = os.urandom(8)
        entry = format_entry(prev, nonce, identity, uid_hash)
        try:
            db.conn.execute(
                "INSERT INTO chain (pos, entry, hash, nonce, ts) VALUES (?, ?, ?, ?, ?)",
                (pos, entry, entry[:32], nonce, now))
        except sqlite3.IntegrityError:
            if nonce_taken(db, nonce):
                continue  # the nonce is already in the chain (§7.1: unique); draw another
            raise  # position or hash: a bug, never to be retried silently
        return Head(pos, entry, now)


def nonce_taken(db: sqlite_utils.Database, nonce: bytes) -> bool:
    return db.conn.execute("SELECT 1 FROM chain WHERE nonce = ?", (nonce,)).fetchone() is not None


def read_entries(db: sqlite_utils.Database, start: int, count: int) -> list[bytes]:
    return [row[0] for row in db.conn.execute(
        "SELECT entry FROM chain WHERE pos >= ? AND pos < ? ORDER BY pos", (start, start + count))]


def entry_at(db: sqlite_utils.Database, pos: int) -> Head | None:
    row = db.conn.execute("SELECT pos, entry, ts FROM chain WHERE pos = ?", (pos,)).fetchone()
    return Head(*row) if row else None


def position_of(db: sqlite_utils.Database, entry_hash: bytes) -> int | None:
    row = db.conn.execute("SELECT pos FROM chain WHERE hash = ?", (entry_hash,)).fetchone()
    return row[0] if row else None


def verify_stored(db: sqlite_utils.Database, batch: int = 100_000) -> int:
    """Recompute every link of the stored chain; return its length or raise
    ``ChainError`` naming the first bad position (gaps in positions included)."""
    prev, expected = ZERO_HASH, 0
    while True:
        rows = db.conn.execute(
            "SELECT pos, entry FROM chain WHERE pos >= ? ORDER BY pos LIMIT ?",
            (expected, batch)).fetchall()
        if not rows:
            return expected
        for missing, (pos, _) in enumerate(rows, expected):
            if pos != missing:
                raise ChainError(f"entry {missing} is missing", position=missing)
        prev = verify_entries([entry for _, entry in rows], prev, expected)
        expected += len(rows)

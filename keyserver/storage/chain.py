"""Storage of the hashchain (§7): the one append path, reads, and a full re-check.

``append`` must run inside ``db.transaction``: the write lock makes the head it
reads the head it extends, so positions stay dense and links stay valid.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

import sqlite_utils

from client.protocol.errors import ChainError
from client.protocol.hashchain import ZERO_HASH, format_entry, verify_entries

from . import tree


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


def next_ts(last: Head | None, now: int) -> int:
    """The time of the entry after ``last`` (§5): ``max(now, last.ts)``, so that times
    never decrease along the chain, whichever worker's clock is behind."""
    return max(now, last.ts) if last else now


def append(db: sqlite_utils.Database, identity: str, uid_hash: bytes, now: int,
           last: Head | None = None) -> Head:
    """Append the entry of ``identity``'s UIDMessage with hash ``uid_hash`` after
    ``last``, the head if the caller read it in this transaction; the entry's time
    is ``next_ts(last, now)``."""
    assert db.conn.in_transaction, "append runs inside db.transaction"
    if last is None:
        last = head(db)
    now = next_ts(last, now)
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
        tree.add_leaf(db, pos, entry)   # §8: the Merkle tree grows in the same transaction
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


#: One batch of the full re-check. ``CAST`` reads an entry stored as TEXT or a number
#: without decoding it; ``problem`` names a row whose columns disagree, because the
#: server reads them in the entry's place (``hash`` resolves a lastentry, ``nonce``
#: keeps nonces unique).
_CHECK_SQL = """
SELECT pos, CAST(entry AS BLOB),
       CASE WHEN typeof(entry) != 'blob' THEN 'stored as ' || typeof(entry) || ', not as a BLOB'
            WHEN hash IS NOT substr(entry, 1, 32) THEN 'hash column is not its first 32 bytes'
            WHEN nonce IS NOT substr(entry, 34, 8) THEN 'nonce column is not its nonce'
       END
FROM chain WHERE pos >= ? ORDER BY pos LIMIT ?
"""


def verify_stored(db: sqlite_utils.Database, batch: int = 100_000) -> int:
    """Recompute every link of the stored chain and check the columns stored beside
    each entry; return the chain's length or raise ``ChainError`` naming the first
    bad position: a gap, a bad entry or column, or a missing end."""
    prev, start = ZERO_HASH, 0
    while True:
        rows = db.conn.execute(_CHECK_SQL, (start, batch)).fetchall()
        if not rows:
            _check_length(db, start)
            return start
        good = _good_prefix(rows, start)
        prev = verify_entries([entry for _, entry, _ in rows[:good]], prev, start)
        if good < len(rows):
            raise _row_error(rows[good], start + good)
        start += len(rows)


def _good_prefix(rows: list[tuple], start: int) -> int:
    """How many ``rows`` in a row sit at their expected positions without a problem."""
    for index, (pos, _, problem) in enumerate(rows):
        if pos != start + index or problem is not None:
            return index
    return len(rows)


def _row_error(row: tuple, expected: int) -> ChainError:
    pos, _, problem = row
    if pos != expected:
        return ChainError(f"entry {expected} is missing", position=expected)
    return ChainError(f"entry {pos}: {problem}", position=pos)


def _check_length(db: sqlite_utils.Database, length: int) -> None:
    """Entry 0, the server's own (§7.2), is always there; and entries deleted from
    the end leave no gap, but the indexes still name them."""
    if length == 0:
        raise ChainError("entry 0 is missing: the chain is empty, but entry 0 is the "
                         "server's own (§7.2)", position=0)
    referenced = db.conn.execute(
        "SELECT max(pos) FROM (SELECT max(pos) AS pos FROM uids"
        " UNION ALL SELECT max(pos) FROM identities UNION ALL SELECT max(pos) FROM history)"
    ).fetchone()[0]
    if referenced is not None and referenced >= length:
        raise ChainError(f"entry {length} is missing: the chain ends there, but the indexes "
                         f"name position {referenced}", position=length)

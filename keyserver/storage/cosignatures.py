"""Storage of the witnesses' cosignatures of the log's checkpoints (§8.1) and of what
the log knows of each witness it asks: the size it last cosigned, its successes,
failures and backoff. SQL only; the checkpoints are read with their cosignatures by
``storage.checkpoints``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .db import Database


@dataclass(frozen=True)
class WitnessState:
    witness: str
    #: The size the witness last cosigned for this log, or said it holds (0: none).
    cosigned_size: int
    last_success_ts: int | None
    #: Failures in a row since the last success, and the last one's error.
    failures: int
    last_error: str | None
    next_attempt_ts: int


def insert(db: Database, tree_size: int, witness: str, line: str, timestamp: int) -> bool:
    """Store the witness's cosignature of the checkpoint of ``tree_size``; one per
    checkpoint and witness (the primary key), so that a second worker's is ignored.
    Return whether it was new."""
    cursor = db.conn.execute(
        "INSERT INTO cosignatures (tree_size, witness, line, timestamp) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (tree_size, witness) DO NOTHING", (tree_size, witness, line, timestamp))
    return cursor.rowcount == 1


def cosigned(db: Database, tree_size: int, witness: str) -> bool:
    return db.conn.execute("SELECT 1 FROM cosignatures WHERE tree_size = ? AND witness = ?",
                           (tree_size, witness)).fetchone() is not None


def state(db: Database, witness: str) -> WitnessState:
    """What the log knows of ``witness`` (a witness never asked: nothing yet)."""
    row = db.conn.execute(
        "SELECT witness, cosigned_size, last_success_ts, failures, last_error, next_attempt_ts"
        " FROM witness_state WHERE witness = ?", (witness,)).fetchone()
    return WitnessState(*row) if row else WitnessState(witness, 0, None, 0, None, 0)


def claim(db: Database, witness: str, now: int, until: int) -> bool:
    """Take the attempt to ask ``witness`` if it is due at ``now`` (its
    ``next_attempt_ts`` passed), holding it off for others until ``until``; return
    whether this caller may ask. One conditional statement, so of two workers deciding
    at once only one asks."""
    cursor = db.conn.execute(
        "INSERT INTO witness_state (witness, next_attempt_ts) VALUES (?, ?)"
        " ON CONFLICT (witness) DO UPDATE SET next_attempt_ts = excluded.next_attempt_ts"
        " WHERE next_attempt_ts <= ?", (witness, until, now))
    return cursor.rowcount == 1


def release(db: Database, witness: str, now: int) -> None:
    """Give up a claim without an outcome: the witness is due again at ``now``."""
    db.conn.execute("UPDATE witness_state SET next_attempt_ts = ? WHERE witness = ?",
                    (now, witness))


def succeeded(db: Database, witness: str, tree_size: int, now: int) -> int:
    """The witness cosigned the checkpoint of ``tree_size``: no failures, due again at
    once (for the next checkpoint). Return the failures in a row it ends. The size
    only grows, whatever order two workers store in."""
    failures = state(db, witness).failures
    db.conn.execute(
        "INSERT INTO witness_state (witness, cosigned_size, last_success_ts, failures,"
        " last_error, next_attempt_ts) VALUES (?, ?, ?, 0, NULL, ?) ON CONFLICT (witness)"
        " DO UPDATE SET cosigned_size = MAX(cosigned_size, excluded.cosigned_size),"
        " last_success_ts = excluded.last_success_ts, failures = 0, last_error = NULL,"
        " next_attempt_ts = excluded.next_attempt_ts", (witness, tree_size, now, now))
    return failures


def failed(db: Database, witness: str, error: str, next_attempt_ts: int,
           holds: int | None = None) -> None:
    """One more failure in a row: its error, when to try again, and the size the
    witness said it holds (``holds``, from a 409), which the next attempt starts from."""
    db.conn.execute(
        "INSERT INTO witness_state (witness, failures, last_error, next_attempt_ts)"
        " VALUES (?, 1, ?, ?) ON CONFLICT (witness) DO UPDATE SET"
        " failures = failures + 1, last_error = excluded.last_error,"
        " next_attempt_ts = excluded.next_attempt_ts", (witness, error, next_attempt_ts))
    if holds is not None:
        db.conn.execute("UPDATE witness_state SET cosigned_size = ? WHERE witness = ?",
                        (holds, witness))

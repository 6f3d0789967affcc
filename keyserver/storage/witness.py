"""Storage of the witness (§8.1): the checkpoint cosigned last for each log it follows,
and the evidence of logs that contradicted it. SQL only; the service checks ``old``
against ``latest`` and calls ``save`` in one write transaction."""

from __future__ import annotations

from dataclasses import dataclass

from .db import Database


@dataclass(frozen=True)
class Witnessed:
    """The checkpoint of ``origin`` this witness cosigned last (``updated_ts``, ms)."""

    origin: str
    tree_size: int
    root_hash: bytes
    note: str
    updated_ts: int


_COLUMNS = "SELECT origin, tree_size, root_hash, note, updated_ts FROM witnessed_logs"


def latest(db: Database, origin: str) -> Witnessed | None:
    row = db.conn.execute(f"{_COLUMNS} WHERE origin = ?", (origin,)).fetchone()
    return Witnessed(*row) if row else None


def save(db: Database, witnessed: Witnessed) -> None:
    """Make ``witnessed`` the latest checkpoint of its log (inserted, or replacing)."""
    db.conn.execute(
        "INSERT INTO witnessed_logs (origin, tree_size, root_hash, note, updated_ts)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET"
        " tree_size = excluded.tree_size, root_hash = excluded.root_hash,"
        " note = excluded.note, updated_ts = excluded.updated_ts",
        (witnessed.origin, witnessed.tree_size, witnessed.root_hash, witnessed.note,
         witnessed.updated_ts))


def listing(db: Database) -> dict[str, Witnessed]:
    """Every log with a cosigned checkpoint, by origin."""
    return {row[0]: Witnessed(*row) for row in db.conn.execute(_COLUMNS)}


def keep_evidence(db: Database, origin: str, received_ts: int, request: bytes,
                  reason: str) -> None:
    db.conn.execute("INSERT INTO witness_evidence (origin, received_ts, request, reason)"
                    " VALUES (?, ?, ?, ?)", (origin, received_ts, request, reason))


def evidence_counts(db: Database) -> dict[str, int]:
    """origin -> how many requests were kept as evidence against it."""
    return dict(db.conn.execute(
        "SELECT origin, COUNT(*) FROM witness_evidence GROUP BY origin").fetchall())

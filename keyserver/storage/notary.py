"""Storage of the notary's cache (§11.4): per origin, the last key document it
served that its own keys signed, and when it was last asked. One table every worker
process shares, so the refetch limit holds across workers. SQL only.
"""

from __future__ import annotations

from dataclasses import dataclass

from .db import Database


@dataclass(frozen=True)
class CachedDocument:
    server_name: str
    #: The document as served by the origin (JSON text); None until one verified.
    document: str | None
    fetched_ts: int | None
    valid_until_ts: int | None
    #: Its key ids, current and old.
    key_ids: frozenset[str]
    last_attempt_ts: int


def get(db: Database, server_name: str) -> CachedDocument | None:
    row = db.conn.execute(
        "SELECT server_name, document, fetched_ts, valid_until_ts, key_ids, last_attempt_ts"
        " FROM notary_documents WHERE server_name = ?", (server_name,)).fetchone()
    if row is None:
        return None
    name, document, fetched_ts, valid_until_ts, key_ids, last_attempt_ts = row
    return CachedDocument(name, document, fetched_ts, valid_until_ts,
                          frozenset((key_ids or "").split()), last_attempt_ts)


def claim(db: Database, server_name: str, now: int, min_refetch_ms: int) -> bool:
    """Record an attempt to ask ``server_name`` at ``now`` unless one was recorded less
    than ``min_refetch_ms`` before; return whether this caller may ask. One
    conditional statement, so of two workers deciding at once only one asks."""
    cursor = db.conn.execute(
        "INSERT INTO notary_documents (server_name, last_attempt_ts) VALUES (?, ?)"
        " ON CONFLICT (server_name) DO UPDATE SET last_attempt_ts = excluded.last_attempt_ts"
        " WHERE last_attempt_ts <= excluded.last_attempt_ts - ?",
        (server_name, now, min_refetch_ms))
    return cursor.rowcount == 1


def store(db: Database, server_name: str, document: str, fetched_ts: int, valid_until_ts: int,
          key_ids: frozenset[str]) -> None:
    """Replace the cached document of ``server_name`` (claimed before, so the row exists)."""
    db.conn.execute(
        "UPDATE notary_documents SET document = ?, fetched_ts = ?, valid_until_ts = ?,"
        " key_ids = ? WHERE server_name = ?",
        (document, fetched_ts, valid_until_ts, " ".join(sorted(key_ids)), server_name))

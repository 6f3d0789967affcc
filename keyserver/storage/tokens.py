"""Storage of payment tokens (§10): the token keys' rows and the spent tokens. SQL only.

A token key's private part lives in a file under ``<instance>/token_keys/``
(``service.tokenkeys`` writes and reads it); its row holds what the capabilities
publish and when it stops verifying. A token is spent exactly once because
``spent_tokens``' primary key refuses its spend id a second time.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from .db import Database


@dataclass(frozen=True)
class TokenKey:
    key_id: bytes
    spki: bytes
    created_ts: int
    not_after_ts: int
    filename: str


def insert_key(db: Database, key: TokenKey) -> None:
    db.conn.execute(
        "INSERT INTO token_keys (key_id, spki, created_ts, not_after_ts, filename)"
        " VALUES (?, ?, ?, ?, ?)",
        (key.key_id, key.spki, key.created_ts, key.not_after_ts, key.filename))


def all_keys(db: Database) -> list[TokenKey]:
    return [TokenKey(*row) for row in db.conn.execute(
        "SELECT key_id, spki, created_ts, not_after_ts, filename FROM token_keys"
        " ORDER BY created_ts, rowid")]


def valid_keys(db: Database, now: int) -> list[TokenKey]:
    """Keys that still verify tokens: ``now < not_after_ts``, oldest first."""
    return [key for key in all_keys(db) if now < key.not_after_ts]


def spend(db: Database, spend_id: bytes) -> bool:
    """Record a token as spent; False if it already was."""
    try:
        db.conn.execute("INSERT INTO spent_tokens (spend_id) VALUES (?)", (spend_id,))
    except sqlite3.IntegrityError:
        return False
    return True


def spent_count(db: Database) -> int:
    return db.conn.execute("SELECT count(*) FROM spent_tokens").fetchone()[0]

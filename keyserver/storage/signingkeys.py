"""Storage of the server's signing-key windows (§11.2): when each key began signing
and when it expired (the end of the overlap after a rotation). The seeds live in
the key file (``service.signing``); which key signs is decided here, in the same
transaction as the chain entry that installs it. SQL only.
"""

from __future__ import annotations

from dataclasses import dataclass

from .db import Database


@dataclass(frozen=True)
class KeyWindow:
    key_id: str
    pubkey: bytes
    created_ts: int
    #: The end of its overlap after a rotation; None while it is the signing key.
    expired_ts: int | None

    def current_at(self, now: int) -> bool:
        return self.expired_ts is None or now < self.expired_ts


def insert(db: Database, key_id: str, pubkey: bytes, created_ts: int) -> None:
    db.conn.execute("INSERT INTO signing_keys (key_id, pubkey, created_ts) VALUES (?, ?, ?)",
                    (key_id, pubkey, created_ts))


def expire(db: Database, key_id: str, expired_ts: int) -> None:
    db.conn.execute("UPDATE signing_keys SET expired_ts = ? WHERE key_id = ?",
                    (expired_ts, key_id))


def windows(db: Database) -> list[KeyWindow]:
    """Every key's window, oldest first: the last one signs."""
    return [KeyWindow(*row) for row in db.conn.execute(
        "SELECT key_id, pubkey, created_ts, expired_ts FROM signing_keys"
        " ORDER BY created_ts, rowid")]

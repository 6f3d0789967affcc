"""Storage of the server's own messages (``keyserver@<server_name>``, §4, §7.2) in
plain form: the server writes their updates (a changed ``preferences.server``), and
the chain keeps them only encrypted under a UIDHash the server does not index.
They hold no secret: anyone who knows the server name can open them. SQL only.
"""

from __future__ import annotations

import json

from .db import Database


def insert(db: Database, pos: int, message: dict) -> None:
    db.conn.execute("INSERT INTO own_messages (pos, message) VALUES (?, ?)",
                    (pos, json.dumps(message)))


def latest(db: Database) -> str | None:
    """The server's latest own message, as the JSON text stored."""
    row = db.conn.execute(
        "SELECT message FROM own_messages ORDER BY pos DESC LIMIT 1").fetchone()
    return None if row is None else row[0]

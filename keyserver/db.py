"""The server's SQLite database (WAL mode), one connection per request.

Writers take the database lock up front (``BEGIN IMMEDIATE`` in
``transaction``), so every write is one serialized transaction: the chain
append, the index updates and the token spend commit together or not at all,
and uniqueness is enforced by constraints rather than by checking first.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Iterator

import sqlite_utils
from flask import Flask, current_app, g

SCHEMA_VERSION = 1

SCHEMA = """
-- The public hashchain (§7): dense positions from 0, append time for §7.4.
-- hash (= H[pos], the entry's first 32 bytes) finds the entry a lastentry names.
CREATE TABLE IF NOT EXISTS chain (
    pos INTEGER PRIMARY KEY,
    entry BLOB NOT NULL,
    hash BLOB NOT NULL UNIQUE,
    nonce BLOB NOT NULL UNIQUE,
    ts INTEGER NOT NULL
);
-- The key repository (§5): UIDMessageReply parts, one per chain entry.
CREATE TABLE IF NOT EXISTS uids (
    pos INTEGER PRIMARY KEY REFERENCES chain(pos),
    uid_index BLOB NOT NULL UNIQUE,
    encrypted BLOB NOT NULL,
    ts INTEGER NOT NULL,
    signatures TEXT NOT NULL
);
-- Private indexes (§6): identity -> what the rules need of its latest
-- UIDMessage, and its history (seq 0 = first UIDMessage) as chain positions.
CREATE TABLE IF NOT EXISTS identities (
    identity TEXT PRIMARY KEY,
    msgcount INTEGER NOT NULL,
    sigkey BLOB NOT NULL,
    sigescrow BLOB,
    not_before_ts INTEGER NOT NULL,
    not_after_ts INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    history_len INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    identity TEXT NOT NULL,
    seq INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    PRIMARY KEY (identity, seq)
) WITHOUT ROWID;
-- sigkey/sigescrow hash -> identity: a key belongs to one identity only (§4).
CREATE TABLE IF NOT EXISTS keyhashes (
    keyhash BLOB PRIMARY KEY,
    identity TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;
"""


def database_path(app: Flask) -> str:
    return os.path.join(app.instance_path, app.config["DATABASE"])


def connect(path: str, synchronous: str = "FULL") -> sqlite_utils.Database:
    """Open the database in autocommit mode; ``transaction`` brackets writes."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    return sqlite_utils.Database(conn)


def get_db() -> sqlite_utils.Database:
    if "db" not in g:
        g.db = connect(database_path(current_app), current_app.config["SQLITE_SYNCHRONOUS"])
    return g.db


def close_db(exc: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.conn.close()


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One write transaction holding the write lock from its start (no upgrade races)."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


def init_db(db: sqlite_utils.Database) -> None:
    with transaction(db):
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.conn.execute(statement)
        db.conn.execute("INSERT OR IGNORE INTO state (key, value) VALUES ('schema_version', ?)",
                        (SCHEMA_VERSION,))


def get_state(db: sqlite_utils.Database, key: str, default=None):
    row = db.conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    return default if row is None else row[0]


def set_state(db: sqlite_utils.Database, key: str, value) -> None:
    db.conn.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_db)

"""Storage of the key repository (§5) and its private indexes (§6): SQL only.

The rules and the signing of replies are ``service.uids``'; this module reads and
writes the ``uids``, ``identities``, ``history`` and ``keyhashes`` tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlite_utils

from client.protocol.keys import ED25519, KeyEntry
from client.protocol.uidmessage import UIDMessage
from client.protocol.uidrules import Latest


@dataclass(frozen=True)
class StoredReply:
    """The parts of a UIDMessageReply as stored (``service.uids`` formats them)."""

    encrypted: bytes
    entry: bytes
    pos: int
    ts: int
    signatures: dict


def latest(db: sqlite_utils.Database, identity: str) -> Latest | None:
    """What the rules need of the identity's latest UIDMessage, None if unregistered."""
    row = db.conn.execute(
        "SELECT msgcount, sigkey, sigescrow, not_before_ts, not_after_ts FROM identities"
        " WHERE identity = ?", (identity,)).fetchone()
    if row is None:
        return None
    msgcount, sigkey, sigescrow, not_before_ts, not_after_ts = row
    return Latest(msgcount, KeyEntry(ED25519, sigkey),
                  KeyEntry(ED25519, sigescrow) if sigescrow else None, not_before_ts,
                  not_after_ts)


def keys_owned_by_other(db: sqlite_utils.Database, message: UIDMessage) -> bool:
    """Whether a sigkey or sigescrow of ``message`` belongs to another identity."""
    hashes = message.key_hashes
    placeholders = ", ".join("?" * len(hashes))
    row = db.conn.execute(
        f"SELECT 1 FROM keyhashes WHERE keyhash IN ({placeholders}) AND identity != ? LIMIT 1",
        (*hashes, message.identity)).fetchone()
    return row is not None


def insert(db: sqlite_utils.Database, message: UIDMessage, pos: int, encrypted: bytes,
           ts: int, signatures: dict, previous: Latest | None) -> None:
    """Store an accepted message's reply at chain position ``pos`` and update the indexes.

    ``previous`` is the identity's latest message the checks saw; the index update
    is conditional on it, so a racing writer can never be silently overwritten."""
    identity = message.identity
    db.conn.execute(
        "INSERT INTO uids (pos, uid_index, encrypted, ts, signatures) VALUES (?, ?, ?, ?, ?)",
        (pos, encrypted[:32], encrypted, ts, json.dumps(signatures)))
    values = (message.msgcount, message.sigkey.pubkey,
              message.sigescrow.pubkey if message.sigescrow else None,
              message.not_before_ts, message.not_after_ts, pos)
    if previous is None:
        db.conn.execute(
            "INSERT INTO identities (msgcount, sigkey, sigescrow, not_before_ts, not_after_ts,"
            " pos, history_len, identity) VALUES (?, ?, ?, ?, ?, ?, 1, ?)", values + (identity,))
    else:
        changed = db.conn.execute(
            "UPDATE identities SET msgcount = ?, sigkey = ?, sigescrow = ?, not_before_ts = ?,"
            " not_after_ts = ?, pos = ?, history_len = history_len + 1"
            " WHERE identity = ? AND msgcount = ?",
            values + (identity, previous.msgcount)).rowcount
        if changed != 1:
            raise RuntimeError(f"index of {identity} changed under a write transaction")
    db.conn.execute(
        "INSERT INTO history (identity, seq, pos)"
        " SELECT identity, history_len - 1, ? FROM identities WHERE identity = ?",
        (pos, identity))
    rows = ", ".join("(?, ?)" for _ in message.key_hashes)
    db.conn.execute(f"INSERT OR IGNORE INTO keyhashes (keyhash, identity) VALUES {rows}",
                    [value for keyhash in message.key_hashes for value in (keyhash, identity)])


def _stored(row: tuple) -> StoredReply:
    encrypted, entry, pos, ts, signatures = row
    return StoredReply(encrypted, entry, pos, ts, json.loads(signatures))


_REPLY_SQL = ("SELECT u.encrypted, c.entry, u.pos, u.ts, u.signatures FROM uids u"
              " JOIN chain c ON c.pos = u.pos")


def fetch_reply(db: sqlite_utils.Database, uid_index: bytes) -> StoredReply | None:
    """FetchUID: the stored UIDMessageReply under its UIDIndex."""
    row = db.conn.execute(f"{_REPLY_SQL} WHERE u.uid_index = ?", (uid_index,)).fetchone()
    return _stored(row) if row else None


def replies_between(db: sqlite_utils.Database, first: int, end: int) -> list[StoredReply]:
    """The stored replies of positions ``first .. end - 1``, by position (a bundle, §5.1)."""
    rows = db.conn.execute(f"{_REPLY_SQL} WHERE u.pos >= ? AND u.pos < ? ORDER BY u.pos",
                           (first, end)).fetchall()
    return [_stored(row) for row in rows]


def latest_reply(db: sqlite_utils.Database, identity: str) -> StoredReply | None:
    row = db.conn.execute(
        f"{_REPLY_SQL} JOIN identities i ON i.pos = u.pos WHERE i.identity = ?",
        (identity,)).fetchone()
    return _stored(row) if row else None


def history(db: sqlite_utils.Database, identity: str, start: int,
            page_size: int) -> tuple[list[StoredReply], int | None] | None:
    """A page of the identity's replies, oldest first, and the next start (or None)."""
    row = db.conn.execute("SELECT history_len FROM identities WHERE identity = ?",
                          (identity,)).fetchone()
    if row is None:
        return None
    rows = db.conn.execute(
        f"{_REPLY_SQL} JOIN history h ON h.pos = u.pos WHERE h.identity = ? AND h.seq >= ?"
        " ORDER BY h.seq LIMIT ?", (identity, start, page_size)).fetchall()
    following = start + page_size
    return [_stored(r) for r in rows], following if following < row[0] else None

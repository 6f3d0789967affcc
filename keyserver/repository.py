"""The key repository (§5, §6): encrypted UIDMessages, their signed replies, and
the private indexes, all written by ``store_uid_message`` in the caller's
transaction together with the chain entry.
"""

from __future__ import annotations

import json

import sqlite_utils

from client.encoding import b64encode
from client.uidmessage import UIDMessage, encrypt_uid_message

from . import chainstore, signing


def format_reply(encrypted: bytes, entry: bytes, pos: int, ts: int) -> dict:
    return {"entry": {"uid_message_encrypted": b64encode(encrypted),
                      "hashchain_entry": b64encode(entry),
                      "hashchain_pos": pos, "ts": ts}}


def store_uid_message(db: sqlite_utils.Database, message: UIDMessage, now: int) -> dict:
    """Encrypt and store an accepted UIDMessage, append its chain entry, update
    the indexes, and return the signed UIDMessageReply. Runs in ``transaction``."""
    identity = message.identity
    uid_hash, encrypted = encrypt_uid_message(message.raw)
    head = chainstore.append(db, identity, uid_hash, now)
    reply = signing.sign(format_reply(encrypted, head.entry, head.pos, now))
    db.conn.execute(
        "INSERT INTO uids (pos, uid_index, encrypted, ts, signatures) VALUES (?, ?, ?, ?, ?)",
        (head.pos, encrypted[:32], encrypted, now, json.dumps(reply["signatures"])))
    row = db.conn.execute("SELECT history_len FROM identities WHERE identity = ?",
                          (identity,)).fetchone()
    seq = row[0] if row else 0
    db.conn.execute(
        "INSERT OR REPLACE INTO identities (identity, msgcount, sigkey, sigescrow,"
        " not_before_ts, not_after_ts, pos, history_len) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (identity, message.msgcount, message.sigkey.pubkey,
         message.sigescrow.pubkey if message.sigescrow else None,
         message.not_before_ts, message.not_after_ts, head.pos, seq + 1))
    db.conn.execute("INSERT INTO history (identity, seq, pos) VALUES (?, ?, ?)",
                    (identity, seq, head.pos))
    for keyhash in message.key_hashes:
        db.conn.execute("INSERT OR REPLACE INTO keyhashes (keyhash, identity) VALUES (?, ?)",
                        (keyhash, identity))
    return reply


def fetch_reply(db: sqlite_utils.Database, uid_index: bytes) -> dict | None:
    row = db.conn.execute(
        "SELECT u.encrypted, c.entry, u.pos, u.ts, u.signatures FROM uids u"
        " JOIN chain c ON c.pos = u.pos WHERE u.uid_index = ?", (uid_index,)).fetchone()
    if row is None:
        return None
    encrypted, entry, pos, ts, signatures = row
    return {**format_reply(encrypted, entry, pos, ts), "signatures": json.loads(signatures)}

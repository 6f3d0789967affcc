"""The key repository (§4, §5, §6): accepting UIDMessages, storing them encrypted
with their signed replies, and the private indexes.

``put_uid_message`` runs the checks in the order of §4.2.1 and does every write
(token spend, chain entry, repository, indexes) in one transaction, so a
failed request changes nothing and a successful one is whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, TypeVar

import sqlite_utils
from flask import Flask

from client.protocol.encoding import b64encode, require_fields
from client.protocol.errors import KeyInUse
from client.protocol.keyinit import sigkeyhash
from client.protocol.keys import ED25519, KeyEntry
from client.protocol.uidmessage import UIDMessage, encrypt_uid_message, parse_uid_message
from client.protocol.uidrules import (Latest, Limits, check_identity, check_lastentry,
                             check_preferences, check_state, check_validity, signature_error)

from . import chainstore, keyinitstore, signing

T = TypeVar("T")

#: Called inside the write transaction with the operation's name ("create_uid" or
#: "update_uid"); raises to refuse, and whatever it writes commits with the write.
Charge = Callable[[sqlite_utils.Database, str], None]
#: Runs a job as one atomic write (``db.write`` in requests).
Write = Callable[[Callable[[sqlite_utils.Database], T]], T]


@dataclass(frozen=True)
class Policy:
    """The server configuration the rules consult."""

    domains: frozenset[str]
    reserved: frozenset[str]
    allowed_mixaddresses: frozenset[str]
    limits: Limits

    @classmethod
    def from_app(cls, app: Flask) -> "Policy":
        config = app.config
        return cls(frozenset(config["DOMAINS"]), frozenset(config["RESERVED_LOCALPARTS"]),
                   frozenset(config["ALLOWED_MIXADDRESSES"]),
                   Limits(config["MAX_UID_LIFETIME"], config["RECLAIM_GRACE"],
                          config["LASTENTRY_MAX_AGE"]))


def format_reply(encrypted: bytes, entry: bytes, pos: int, ts: int) -> dict:
    return {"entry": {"uid_message_encrypted": b64encode(encrypted),
                      "hashchain_entry": b64encode(entry),
                      "hashchain_pos": pos, "ts": ts}}


def latest(db: sqlite_utils.Database, identity: str) -> Latest | None:
    row = db.conn.execute(
        "SELECT msgcount, sigkey, sigescrow, not_before_ts, not_after_ts FROM identities"
        " WHERE identity = ?", (identity,)).fetchone()
    if row is None:
        return None
    msgcount, sigkey, sigescrow, not_before_ts, not_after_ts = row
    return Latest(msgcount, KeyEntry(ED25519, sigkey),
                  KeyEntry(ED25519, sigescrow) if sigescrow else None, not_before_ts,
                  not_after_ts)


def check_keys_free(db: sqlite_utils.Database, message: UIDMessage) -> None:
    """A sigkey or sigescrow belongs to one identity forever (§4: ``KEY_IN_USE``)."""
    hashes = message.key_hashes
    placeholders = ", ".join("?" * len(hashes))
    row = db.conn.execute(
        f"SELECT 1 FROM keyhashes WHERE keyhash IN ({placeholders}) AND identity != ? LIMIT 1",
        (*hashes, message.identity)).fetchone()
    if row is not None:
        raise KeyInUse("this key is already used by another identity: generate a new one")


def check_lastentry_fresh(db: sqlite_utils.Database, lastentry: bytes, now: int,
                          max_age_ms: int) -> chainstore.Head:
    """§7.4, against the head, which is returned for the append that follows."""
    position = chainstore.position_of(db, lastentry)
    head = chainstore.head(db)
    successor = chainstore.entry_at(db, position + 1) if position is not None else None
    check_lastentry(position, head.pos, successor.ts if successor else None, now, max_age_ms)
    return head


def put_uid_message(db: sqlite_utils.Database, write: Write, path_identity: str, body: dict,
                    now: int, policy: Policy, charge: Charge) -> tuple[dict, bool]:
    """CreateUID/UpdateUID: return the signed reply and whether it created the identity.

    The checks that need no state run first. The signatures (the costly part) are
    verified before the write lock against the latest message as read now, and
    only verified again inside if a racing write changed it; their verdict is
    still given at its place in the order of checks."""
    require_fields(body, {"uid_message"}, "request body")
    message = parse_uid_message(body["uid_message"])
    check_preferences(message, policy.allowed_mixaddresses)
    check_identity(message, path_identity, policy.domains, policy.reserved)
    seen = latest(db, message.identity)
    seen_error = signature_error(message, seen)
    sealed = encrypt_uid_message(message.raw)

    def accept(db: sqlite_utils.Database) -> tuple[dict, bool]:
        previous = latest(db, message.identity)
        charge(db, "create_uid" if message.msgcount == 0 else "update_uid")
        create = check_state(message, previous, now, policy.limits.reclaim_grace_ms)
        check_keys_free(db, message)
        check_validity(message, now, policy.limits.max_uid_lifetime_ms)
        error = seen_error if previous == seen else signature_error(message, previous)
        if error is not None:
            raise error
        head = check_lastentry_fresh(db, message.lastentry, now,
                                     policy.limits.lastentry_max_age_ms)
        return store_uid_message(db, message, now, previous, sealed, head), create

    return write(accept)


def store_uid_message(db: sqlite_utils.Database, message: UIDMessage, now: int,
                      previous: Latest | None = None,
                      sealed: tuple[bytes, bytes] | None = None,
                      last: chainstore.Head | None = None) -> dict:
    """Encrypt and store an accepted UIDMessage, append its chain entry, update the
    indexes, and return the signed UIDMessageReply. Runs in ``transaction``.

    ``previous`` is the identity's latest message the checks saw; the index update
    is conditional on it, so a racing writer can never be silently overwritten.
    When the message replaces ``previous``'s sigkey, or reclaims the identity, the
    KeyInits stored under ``previous``'s sigkey are deleted with it (§9).
    ``sealed`` is ``encrypt_uid_message(message.raw)`` if already computed, ``last``
    the chain's head if already read in this transaction.
    """
    identity = message.identity
    uid_hash, encrypted = sealed or encrypt_uid_message(message.raw)
    head = chainstore.append(db, identity, uid_hash, now, last)
    reply = signing.sign(format_reply(encrypted, head.entry, head.pos, now))
    db.conn.execute(
        "INSERT INTO uids (pos, uid_index, encrypted, ts, signatures) VALUES (?, ?, ?, ?, ?)",
        (head.pos, encrypted[:32], encrypted, now, json.dumps(reply["signatures"])))
    values = (message.msgcount, message.sigkey.pubkey,
              message.sigescrow.pubkey if message.sigescrow else None,
              message.not_before_ts, message.not_after_ts, head.pos)
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
        if message.msgcount == 0 or message.sigkey != previous.sigkey:
            # §9: KeyInits die with the sigkey that signed them, and with the owner on
            # a reclaim; senders must not get key material the identity no longer vouches for.
            keyinitstore.delete_all(db, sigkeyhash(previous.sigkey.pubkey))
    db.conn.execute(
        "INSERT INTO history (identity, seq, pos)"
        " SELECT identity, history_len - 1, ? FROM identities WHERE identity = ?",
        (head.pos, identity))
    rows = ", ".join("(?, ?)" for _ in message.key_hashes)
    db.conn.execute(f"INSERT OR IGNORE INTO keyhashes (keyhash, identity) VALUES {rows}",
                    [value for keyhash in message.key_hashes for value in (keyhash, identity)])
    return reply


def _reply_of(row: tuple) -> dict:
    encrypted, entry, pos, ts, signatures = row
    return {**format_reply(encrypted, entry, pos, ts), "signatures": json.loads(signatures)}


_REPLY_SQL = ("SELECT u.encrypted, c.entry, u.pos, u.ts, u.signatures FROM uids u"
              " JOIN chain c ON c.pos = u.pos")


def fetch_reply(db: sqlite_utils.Database, uid_index: bytes) -> dict | None:
    """FetchUID: the stored UIDMessageReply under its UIDIndex."""
    row = db.conn.execute(f"{_REPLY_SQL} WHERE u.uid_index = ?", (uid_index,)).fetchone()
    return _reply_of(row) if row else None


def latest_reply(db: sqlite_utils.Database, identity: str) -> dict | None:
    row = db.conn.execute(
        f"{_REPLY_SQL} JOIN identities i ON i.pos = u.pos WHERE i.identity = ?",
        (identity,)).fetchone()
    return _reply_of(row) if row else None


def history(db: sqlite_utils.Database, identity: str, start: int,
            page_size: int) -> tuple[list[dict], int | None] | None:
    """A page of the identity's replies, oldest first, and the next start (or None)."""
    row = db.conn.execute("SELECT history_len FROM identities WHERE identity = ?",
                          (identity,)).fetchone()
    if row is None:
        return None
    rows = db.conn.execute(
        f"{_REPLY_SQL} JOIN history h ON h.pos = u.pos WHERE h.identity = ? AND h.seq >= ?"
        " ORDER BY h.seq LIMIT ?", (identity, start, page_size)).fetchall()
    following = start + page_size
    return [_reply_of(r) for r in rows], following if following < row[0] else None

"""Storage of the KeyInit repository (§9): SQL only, no rules and no Flask.

KeyInits are kept by ``sigkeyhash`` as the canonical JSON they were uploaded as,
beside the columns the fetch choice needs. ``keyinit_state`` remembers per
sigkeyhash, forever, what must survive the KeyInits themselves: the largest
msgcount ever accepted (so a consumed KeyInit cannot be uploaded again), the last
accepted flush's ``ts`` (so a flush cannot be replayed) and the sigkey (so a flush,
which names only the sigkeyhash, can be checked). ``keyinit_fetches`` holds the
fetches of the last rate-limit window, per client address and per sigkeyhash.

Every function that writes runs inside the caller's write transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlite_utils

from client.protocol.encoding import canonical_json, sha256
from client.protocol.keyinit import KeyInit
from client.protocol.keys import ED25519, KeyEntry
from client.protocol.uidrules import Latest
from client.protocol.wire import KeyInitStatus

from .db import count


@dataclass(frozen=True)
class Stored:
    """A stored KeyInit as the fetch choice sees it (fits ``client.protocol.keyinit.Validity``)."""

    id: int
    not_before_ts: int
    not_after_ts: int
    fallback: bool


@dataclass(frozen=True)
class FlushState:
    sigkey: bytes
    last_flush_ts: int | None


def sigkey_owner(db: sqlite_utils.Database, sigkey_pubkey: bytes) -> Latest | None:
    """The latest message of the identity whose *current* sigkey this is, else None
    (an unknown key, or one its identity has since replaced)."""
    row = db.conn.execute(
        "SELECT i.msgcount, i.sigescrow, i.not_before_ts, i.not_after_ts FROM keyhashes k"
        " JOIN identities i ON i.identity = k.identity WHERE k.keyhash = ? AND i.sigkey = ?",
        (sha256(sigkey_pubkey), sigkey_pubkey)).fetchone()
    if row is None:
        return None
    msgcount, sigescrow, not_before_ts, not_after_ts = row
    return Latest(msgcount, KeyEntry(ED25519, sigkey_pubkey),
                  KeyEntry(ED25519, sigescrow) if sigescrow else None, not_before_ts,
                  not_after_ts)


def max_msgcount(db: sqlite_utils.Database, sigkeyhash: bytes) -> int | None:
    """The largest msgcount ever accepted for ``sigkeyhash`` (None if none ever was)."""
    row = db.conn.execute("SELECT max_msgcount FROM keyinit_state WHERE sigkeyhash = ?",
                          (sigkeyhash,)).fetchone()
    return None if row is None else row[0]


def count_unexpired(db: sqlite_utils.Database, sigkeyhash: bytes, now: int) -> int:
    return db.conn.execute(
        "SELECT count(*) FROM keyinits WHERE sigkeyhash = ? AND not_after_ts > ?",
        (sigkeyhash, now)).fetchone()[0]


def purge_expired(db: sqlite_utils.Database, now: int, sigkeyhash: bytes | None = None) -> int:
    """Delete the KeyInits that expired at or before ``now``, of one sigkeyhash or of all;
    return how many."""
    if sigkeyhash is None:
        return db.conn.execute("DELETE FROM keyinits WHERE not_after_ts <= ?", (now,)).rowcount
    return db.conn.execute("DELETE FROM keyinits WHERE sigkeyhash = ? AND not_after_ts <= ?",
                           (sigkeyhash, now)).rowcount


def store(db: sqlite_utils.Database, sigkey_pubkey: bytes, sigkeyhash: bytes,
          keyinits: Sequence[KeyInit]) -> None:
    """Store an accepted batch (increasing msgcounts) and raise the msgcount mark to its last."""
    db.conn.executemany(
        "INSERT INTO keyinits (sigkeyhash, msgcount, not_before_ts, not_after_ts, fallback,"
        " keyinit) VALUES (?, ?, ?, ?, ?, ?)",
        [(sigkeyhash, k.msgcount, k.not_before_ts, k.not_after_ts, k.fallback,
          canonical_json(k.raw).decode("utf-8")) for k in keyinits])
    db.conn.execute(
        "INSERT INTO keyinit_state (sigkeyhash, sigkey, max_msgcount) VALUES (?, ?, ?)"
        " ON CONFLICT (sigkeyhash) DO UPDATE SET max_msgcount = excluded.max_msgcount",
        (sigkeyhash, sigkey_pubkey, keyinits[-1].msgcount))
    count(db, "keyinits_added", len(keyinits))


def stored_count(db: sqlite_utils.Database) -> int:
    """KeyInits held (expired ones until they are purged)."""
    return db.conn.execute("SELECT count(*) FROM keyinits").fetchone()[0]


def record_fetched(db: sqlite_utils.Database) -> None:
    """Count a KeyInit handed out (operator statistics, in the fetch's transaction)."""
    count(db, "keyinits_fetched", 1)


_CURRENT = ("SELECT id, not_before_ts, not_after_ts, fallback FROM keyinits"
            " WHERE sigkeyhash = ? AND not_before_ts <= ? AND not_after_ts > ?")


def candidates(db: sqlite_utils.Database, sigkeyhash: bytes, now: int) -> list[Stored]:
    """The current KeyInits the fetch choice must see: the non-fallback one that expires
    first (earliest stored on a tie) if there is one, since it then wins whatever else is
    stored; else every current fallback one. Keeps a fetch O(log n) however many are stored."""
    args = (sigkeyhash, now, now)
    rows = db.conn.execute(f"{_CURRENT} AND NOT fallback ORDER BY not_after_ts, id LIMIT 1",
                           args).fetchall()
    if not rows:
        rows = db.conn.execute(f"{_CURRENT} AND fallback ORDER BY not_after_ts, id",
                               args).fetchall()
    return [Stored(id_, not_before_ts, not_after_ts, bool(fallback))
            for id_, not_before_ts, not_after_ts, fallback in rows]


def keyinit_json(db: sqlite_utils.Database, keyinit_id: int) -> str:
    return db.conn.execute("SELECT keyinit FROM keyinits WHERE id = ?",
                           (keyinit_id,)).fetchone()[0]


def consume(db: sqlite_utils.Database, keyinit_id: int) -> bool:
    """Delete one KeyInit; False if it was already gone (someone else consumed it)."""
    return db.conn.execute("DELETE FROM keyinits WHERE id = ?", (keyinit_id,)).rowcount == 1


def delete_all(db: sqlite_utils.Database, sigkeyhash: bytes) -> int:
    """Delete every stored KeyInit of ``sigkeyhash`` (flush, or its sigkey was replaced)."""
    return db.conn.execute("DELETE FROM keyinits WHERE sigkeyhash = ?", (sigkeyhash,)).rowcount


def status(db: sqlite_utils.Database, sigkeyhash: bytes, now: int) -> KeyInitStatus:
    """The unexpired KeyInits of ``sigkeyhash`` (not-yet-valid ones included): how many
    non-fallback and fallback ones, and the earliest expiry; one query, one snapshot."""
    stored, fallback, expires_first_ts = db.conn.execute(
        "SELECT coalesce(sum(NOT fallback), 0), coalesce(sum(fallback), 0), min(not_after_ts)"
        " FROM keyinits WHERE sigkeyhash = ? AND not_after_ts > ?", (sigkeyhash, now)).fetchone()
    return KeyInitStatus(stored, fallback, expires_first_ts)


def flush_state(db: sqlite_utils.Database, sigkeyhash: bytes) -> FlushState | None:
    """The sigkey and last flush of ``sigkeyhash``; None if it never stored a KeyInit here."""
    row = db.conn.execute("SELECT sigkey, last_flush_ts FROM keyinit_state WHERE sigkeyhash = ?",
                          (sigkeyhash,)).fetchone()
    return None if row is None else FlushState(*row)


def record_flush(db: sqlite_utils.Database, sigkeyhash: bytes, ts: int) -> None:
    db.conn.execute("UPDATE keyinit_state SET last_flush_ts = ? WHERE sigkeyhash = ?",
                    (ts, sigkeyhash))


def count_fetches(db: sqlite_utils.Database, scope: str, key: str | bytes, after: int,
                  at_most: int) -> int:
    """How many fetches of ``key`` in ``scope`` are recorded later than ``after``,
    counted up to ``at_most`` (a limit needs no more, and the index stops there)."""
    return db.conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM keyinit_fetches WHERE scope = ? AND key = ?"
        " AND ts > ? LIMIT ?)", (scope, key, after, at_most)).fetchone()[0]


def record_fetch(db: sqlite_utils.Database, scope: str, key: str | bytes, ts: int) -> None:
    db.conn.execute("INSERT INTO keyinit_fetches (scope, key, ts) VALUES (?, ?, ?)",
                    (scope, key, ts))


def purge_fetches(db: sqlite_utils.Database, until: int) -> int:
    """Forget the fetches recorded at or before ``until``; return how many."""
    return db.conn.execute("DELETE FROM keyinit_fetches WHERE ts <= ?", (until,)).rowcount

"""Vouchers (§10.3): codes sold out of band, each worth a number of tokens.

Only ``SHA256(code)`` is stored, so a database leak reveals no usable code; the
operator sees a short label instead. Spending is one conditional UPDATE, so
racing requests can never take more than a voucher holds.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from client.protocol.encoding import sha256, typed_base32
from client.protocol.errors import VoucherInvalid

from .db import Database

CODE_BYTES = 20


@dataclass(frozen=True)
class Voucher:
    label: str
    tokens: int
    remaining: int
    created_ts: int
    expires_ts: int | None
    revoked_ts: int | None = None


@dataclass(frozen=True)
class NewVoucher:
    """A voucher just made: its code (shown once, never stored) and its label."""

    code: str
    label: str


def new_code() -> str:
    """160 random bits as grouped base32, easy to type from a receipt."""
    text = base64.b32encode(secrets.token_bytes(CODE_BYTES)).decode("ascii")
    return "-".join(text[i:i + 4] for i in range(0, len(text), 4))


def new_label() -> str:
    """The operator's name for a voucher: random, so that it reveals nothing of the code."""
    return "v-" + secrets.token_hex(6)


def _code_hash(code: str) -> bytes:
    """A code is typed from a receipt: it tolerates what the escrow paper does (case,
    spaces, dashes, 0 for O, 1 for I, 8 for B). Codes are base32, which has none of
    those digits, so vouchers made before that tolerance keep their hashes."""
    return sha256(typed_base32(code).encode())


def create(db: Database, tokens: int, now: int, expires_ts: int | None) -> NewVoucher:
    """Store a new voucher (in the caller's transaction)."""
    made = NewVoucher(new_code(), new_label())
    db.conn.execute(
        "INSERT INTO vouchers (code_hash, label, tokens, remaining, created_ts, expires_ts)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (_code_hash(made.code), made.label, tokens, tokens, now, expires_ts))
    return made


def available(db: Database, code: str, count: int, now: int) -> None:
    """Refuse (``VOUCHER_INVALID``) unless the voucher can pay ``count`` tokens now.

    A read before the costly signing; ``spend`` decides for real."""
    row = db.conn.execute(
        "SELECT remaining, expires_ts, revoked_ts FROM vouchers"
        " LEFT JOIN revoked_vouchers USING (code_hash) WHERE code_hash = ?",
        (_code_hash(code),)).fetchone()
    if row is None:
        raise VoucherInvalid("unknown voucher code")
    remaining, expires_ts, revoked_ts = row
    if revoked_ts is not None:
        raise VoucherInvalid("this voucher was revoked by the server's operator")
    if expires_ts is not None and now >= expires_ts:
        raise VoucherInvalid("this voucher has expired")
    if remaining < count:
        raise VoucherInvalid(f"this voucher has {remaining} tokens left, not {count}")


def spend(db: Database, code: str, count: int, now: int) -> int:
    """Take ``count`` tokens off the voucher atomically; return what remains."""
    code_hash = _code_hash(code)
    changed = db.conn.execute(
        "UPDATE vouchers SET remaining = remaining - ? WHERE code_hash = ? AND remaining >= ?"
        " AND (expires_ts IS NULL OR expires_ts > ?)"
        " AND code_hash NOT IN (SELECT code_hash FROM revoked_vouchers)",
        (count, code_hash, count, now)).rowcount
    if changed != 1:
        available(db, code, count, now)  # raises the precise reason
        raise VoucherInvalid("voucher refused")
    return db.conn.execute("SELECT remaining FROM vouchers WHERE code_hash = ?",
                           (code_hash,)).fetchone()[0]


def revoke(db: Database, label: str, now: int) -> bool:
    """Make the voucher ``label`` pay nothing more (in the caller's transaction); its
    row stays for the records. False when no voucher has that label; revoking twice
    keeps the first time."""
    row = db.conn.execute("SELECT code_hash FROM vouchers WHERE label = ?",
                          (label,)).fetchone()
    if row is None:
        return False
    db.conn.execute("INSERT OR IGNORE INTO revoked_vouchers (code_hash, revoked_ts)"
                    " VALUES (?, ?)", (row[0], now))
    return True


def listing(db: Database) -> list[Voucher]:
    return [Voucher(*row) for row in db.conn.execute(
        "SELECT label, tokens, remaining, created_ts, expires_ts, revoked_ts FROM vouchers"
        " LEFT JOIN revoked_vouchers USING (code_hash) ORDER BY created_ts, label")]

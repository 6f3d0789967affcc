"""Vouchers (§10.3): codes sold out of band, each worth a number of tokens.

Only ``SHA256(code)`` is stored, so a database leak reveals no usable code; the
operator sees a short label instead. Spending is one conditional UPDATE, so
racing requests can never take more than a voucher holds.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from client.protocol.encoding import sha256
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


def new_code() -> str:
    """160 random bits as grouped base32, easy to type from a receipt."""
    text = base64.b32encode(secrets.token_bytes(CODE_BYTES)).decode("ascii")
    return "-".join(text[i:i + 4] for i in range(0, len(text), 4))


def new_label() -> str:
    """The operator's name for a voucher: random, so that it reveals nothing of the code."""
    return "v-" + secrets.token_hex(6)


def _normalize(code: str) -> str:
    """Case, spaces and dashes do not matter: a code is typed from a receipt."""
    return "".join(code.upper().split()).replace("-", "")


def create(db: Database, tokens: int, now: int, expires_ts: int | None) -> str:
    """Store a new voucher (in the caller's transaction) and return its code."""
    code = new_code()
    db.conn.execute(
        "INSERT INTO vouchers (code_hash, label, tokens, remaining, created_ts, expires_ts)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (sha256(_normalize(code).encode()), new_label(), tokens, tokens, now, expires_ts))
    return code


def available(db: Database, code: str, count: int, now: int) -> None:
    """Refuse (``VOUCHER_INVALID``) unless the voucher can pay ``count`` tokens now.

    A read before the costly signing; ``spend`` decides for real."""
    row = db.conn.execute("SELECT remaining, expires_ts FROM vouchers WHERE code_hash = ?",
                          (sha256(_normalize(code).encode()),)).fetchone()
    if row is None:
        raise VoucherInvalid("unknown voucher code")
    remaining, expires_ts = row
    if expires_ts is not None and now >= expires_ts:
        raise VoucherInvalid("this voucher has expired")
    if remaining < count:
        raise VoucherInvalid(f"this voucher has {remaining} tokens left, not {count}")


def spend(db: Database, code: str, count: int, now: int) -> int:
    """Take ``count`` tokens off the voucher atomically; return what remains."""
    code_hash = sha256(_normalize(code).encode())
    changed = db.conn.execute(
        "UPDATE vouchers SET remaining = remaining - ? WHERE code_hash = ? AND remaining >= ?"
        " AND (expires_ts IS NULL OR expires_ts > ?)", (count, code_hash, count, now)).rowcount
    if changed != 1:
        available(db, code, count, now)  # raises the precise reason
        raise VoucherInvalid("voucher refused")
    return db.conn.execute("SELECT remaining FROM vouchers WHERE code_hash = ?",
                           (code_hash,)).fetchone()[0]


def listing(db: Database) -> list[Voucher]:
    return [Voucher(*row) for row in db.conn.execute(
        "SELECT label, tokens, remaining, created_ts, expires_ts FROM vouchers"
        " ORDER BY created_ts, label")]

"""Token issuance (§10.3): a voucher exchanged for blind signatures. The server never
sees the token inputs, so it cannot link a later redemption to the voucher that
paid for it."""

from __future__ import annotations

from client.protocol.encoding import b64decode, require_fields, require_str
from client.protocol.errors import InvalidMessage
from client.protocol.tokens import AUTHENTICATOR_LEN, blind_sign

from ..storage import vouchers
from ..storage.db import Database, count
from .policy import Policy
from .tokenkeys import TokenKeyring, usable_keys
from .twophase import Verified, Write, verify_then_decide


def issue_tokens(db: Database, write: Write, body: dict, now: int, policy: Policy,
                 keyring: TokenKeyring) -> tuple[list[bytes], int]:
    """Blind-sign the request's messages with the token key it names and charge the
    voucher; return the signatures and what the voucher has left.

    The voucher is checked and the messages signed (the costly part) before the write
    lock; the signatures leave only if the voucher's conditional spend commits."""
    body = require_fields(body, {"voucher", "token_key_id", "blinded"}, "request body")
    code = require_str(body["voucher"], "voucher")
    key_id = b64decode(body["token_key_id"], "token_key_id", length=32)
    blinded = body["blinded"]
    maximum = policy.max_tokens_per_issue
    if not isinstance(blinded, list) or not 1 <= len(blinded) <= maximum:
        raise InvalidMessage(f"blinded: a list of 1 to {maximum} blinded messages")
    key = next((k for k in usable_keys(db, now) if k.key_id == key_id), None)
    if key is None:
        raise InvalidMessage("token_key_id: not a token key this server lists on its chain "
                             "and that is valid now")
    messages = [b64decode(item, f"blinded[{i}]", length=AUTHENTICATOR_LEN)
                for i, item in enumerate(blinded)]

    def sign_all(_: None) -> list[bytes]:
        signer = keyring.signer(key)
        return [blind_sign(signer, message) for message in messages]

    def charge(db: Database, verified: Verified[None, list[bytes]]) -> tuple[list[bytes], int]:
        # The spend decides: it refuses what the voucher no longer holds.
        remaining = vouchers.spend(db, code, len(messages), now)
        count(db, "tokens_issued", len(messages))
        return verified.verdict, remaining

    return verify_then_decide(
        db, write, lambda db: vouchers.available(db, code, len(messages), now),
        sign_all, charge)

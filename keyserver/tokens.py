"""Token issuance (§10.3): ``POST /v1/tokens/issue`` exchanges a voucher for blind
signatures. The server never sees the token inputs, so it cannot link a later
redemption to the voucher that paid for it."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from client.protocol.encoding import b64decode, b64encode, require_fields, require_str

from .clock import now_ms
from client.protocol.errors import InvalidMessage
from client.protocol.tokens import AUTHENTICATOR_LEN, blind_sign

from . import tokenkeys, vouchers
from .db import Database, count, get_db, write
from .params import json_body

bp = Blueprint("tokens", __name__, url_prefix="/v1/tokens")


@bp.post("/issue")
def issue() -> Response:
    body = require_fields(json_body(), {"voucher", "token_key_id", "blinded"}, "request body")
    code = require_str(body["voucher"], "voucher")
    key_id = b64decode(body["token_key_id"], "token_key_id", length=32)
    blinded = body["blinded"]
    maximum = current_app.config["MAX_TOKENS_PER_ISSUE"]
    if not isinstance(blinded, list) or not 1 <= len(blinded) <= maximum:
        raise InvalidMessage(f"blinded: a list of 1 to {maximum} blinded messages")
    now = now_ms()
    db = get_db()
    key = next((k for k in tokenkeys.valid_keys(db, now) if k.key_id == key_id), None)
    if key is None:
        raise InvalidMessage("token_key_id: not a token key of this server that is valid now")
    messages = [b64decode(item, f"blinded[{i}]", length=AUTHENTICATOR_LEN)
                for i, item in enumerate(blinded)]
    vouchers.available(db, code, len(messages), now)
    private = tokenkeys.private_key(key)
    # Signed before the voucher is charged but released only if the charge commits.
    signatures = [blind_sign(private, message) for message in messages]

    def charge(db: Database) -> int:
        remaining = vouchers.spend(db, code, len(messages), now)
        count(db, "tokens_issued", len(messages))
        return remaining

    remaining = write(charge)
    return jsonify(blind_sigs=[b64encode(s) for s in signatures], remaining=remaining)

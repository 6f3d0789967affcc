"""``POST /v1/tokens/issue`` (§10.3): a voucher exchanged for blind signatures."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from client.protocol.wire import IssuedTokens, format_issued_tokens

from ..service.tokens import issue_tokens
from ..storage.db import get_db, write
from .context import policy, request_now, token_keyring
from .params import json_body

bp = Blueprint("tokens", __name__, url_prefix="/v1/tokens")


@bp.post("/issue")
def issue() -> Response:
    signatures, remaining = issue_tokens(get_db(), write, json_body(), request_now(), policy(),
                                         token_keyring())
    return jsonify(format_issued_tokens(IssuedTokens(tuple(signatures), remaining)))

"""``POST /v1/tokens/issue`` (§10.3): a voucher exchanged for blind signatures."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from client.protocol.wire import IssuedTokens, format_issued_tokens

from ..service.tokens import issue_tokens
from ..storage.db import get_db, write
from .context import policy, request_now, token_keyring
from .params import json_body

bp = Blueprint("tokens", __name__, url_prefix="/v1/tokens")

#: Room for one blinded message in an issue request's body: 342 base64 characters
#: for 256 bytes, its quotes and separator, and some whitespace.
BLINDED_BYTES = 384
#: The body around them: the voucher code, the token key id, the JSON frame.
ISSUE_FRAME_BYTES = 1024


def issue_body_bytes(max_tokens_per_issue: int) -> int:
    """The largest body ``POST /v1/tokens/issue`` takes: the most messages one
    request may ask to have signed (§10.3)."""
    return ISSUE_FRAME_BYTES + max_tokens_per_issue * BLINDED_BYTES


@bp.post("/issue")
def issue() -> Response:
    body = json_body(issue_body_bytes(policy().max_tokens_per_issue))
    signatures, remaining = issue_tokens(get_db(), write, body, request_now(), policy(),
                                         token_keyring())
    return jsonify(format_issued_tokens(IssuedTokens(tuple(signatures), remaining)))

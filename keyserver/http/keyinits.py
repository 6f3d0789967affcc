"""KeyInit repository endpoints (§9, §12): AddKeyInit, FetchKeyInit and FlushKeyInit, and
the owner's status request (our extension, docs/decisions.md)."""

from __future__ import annotations

import random

from flask import Blueprint, Response, current_app, jsonify, request

from client.protocol.encoding import b64url_decode
from client.protocol.wire import format_keyinit_status

from ..service.keyinits import add_keyinits, fetch_keyinit, flush_keyinits, keyinit_status
from ..storage.db import get_db, write
from .context import charger, policy, request_now, sign
from .params import json_body

bp = Blueprint("keyinits", __name__, url_prefix="/v1/keyinits")

#: ``app.extensions`` key of the ``random.Random`` behind the fallback choice; tests
#: put a seeded one there. Production draws from the operating system.
RNG = "keyserver.keyinit_rng"
_SYSTEM_RANDOM = random.SystemRandom()

#: Room for one KeyInit in an add's body. keyclient's are at most 886 bytes (one
#: pfkey, a repouri of 256 characters, integers of 16 digits, as ``json.dumps``
#: writes them); 2 KiB leaves room for a session anchor with several pfkeys.
KEYINIT_BYTES = 2 * 1024
#: An add's body around its KeyInits (the sigkey, the JSON frame), and the whole body
#: of an owner's signed request, flush or status (``{"ts", "signature"}``, about 120
#: bytes).
ADD_FRAME_BYTES = OWNER_BODY_BYTES = 1024


def add_body_bytes(max_per_request: int) -> int:
    """The largest body ``POST /v1/keyinits`` takes: a full batch (§9)."""
    return ADD_FRAME_BYTES + max_per_request * KEYINIT_BYTES


def _path_sigkeyhash(value: str) -> bytes:
    return b64url_decode(value, "sigkeyhash (32 bytes, unpadded base64url)", length=32)


@bp.post("")
def add() -> Response:
    limits = policy().keyinits
    receipt = add_keyinits(get_db(), write, json_body(add_body_bytes(limits.max_per_request)),
                           request_now(), limits, charger(), sign)
    return jsonify(receipt)


@bp.post("/<key_hash>/fetch")
def fetch(key_hash: str) -> Response:
    parsed = _path_sigkeyhash(key_hash)
    rng = current_app.extensions.get(RNG, _SYSTEM_RANDOM)
    # The TCP peer's address, or the client's from X-Forwarded-For when the peer is one
    # of TRUSTED_PROXIES (http/proxies.py).
    keyinit = fetch_keyinit(write, parsed, request.remote_addr or "", request_now(), rng,
                            policy().keyinits)
    # Stored as canonical JSON already: wrapped as is rather than parsed and re-encoded
    # (the hot path of the repository; jsonify would produce the same bytes).
    return Response(f'{{"keyinit":{keyinit}}}\n', mimetype="application/json")


@bp.post("/<key_hash>/flush")
def flush(key_hash: str) -> Response:
    parsed = _path_sigkeyhash(key_hash)
    flushed = flush_keyinits(write, parsed, json_body(OWNER_BODY_BYTES), request_now(),
                             policy().keyinits)
    return jsonify(flushed=flushed)


@bp.post("/<key_hash>/status")
def status(key_hash: str) -> Response:
    parsed = _path_sigkeyhash(key_hash)
    answer = keyinit_status(get_db(), parsed, json_body(OWNER_BODY_BYTES), request_now(), policy().keyinits)
    return jsonify(format_keyinit_status(answer))

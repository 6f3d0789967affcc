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

def _path_sigkeyhash(value: str) -> bytes:
    return b64url_decode(value, "sigkeyhash (32 bytes, unpadded base64url)", length=32)


@bp.post("")
def add() -> Response:
    receipt = add_keyinits(get_db(), write, json_body(), request_now(), policy().keyinits,
                           charger(), sign)
    return jsonify(receipt)


@bp.post("/<key_hash>/fetch")
def fetch(key_hash: str) -> Response:
    parsed = _path_sigkeyhash(key_hash)
    rng = current_app.extensions.get(RNG, _SYSTEM_RANDOM)
    # The address is the TCP peer's: behind a reverse proxy, that of the proxy.
    keyinit = fetch_keyinit(write, parsed, request.remote_addr or "", request_now(), rng,
                            policy().keyinits)
    # Stored as canonical JSON already: wrapped as is rather than parsed and re-encoded
    # (the hot path of the repository; jsonify would produce the same bytes).
    return Response(f'{{"keyinit":{keyinit}}}\n', mimetype="application/json")


@bp.post("/<key_hash>/flush")
def flush(key_hash: str) -> Response:
    parsed = _path_sigkeyhash(key_hash)
    flushed = flush_keyinits(write, parsed, json_body(), request_now(), policy().keyinits)
    return jsonify(flushed=flushed)


@bp.post("/<key_hash>/status")
def status(key_hash: str) -> Response:
    parsed = _path_sigkeyhash(key_hash)
    answer = keyinit_status(get_db(), parsed, json_body(), request_now(), policy().keyinits)
    return jsonify(format_keyinit_status(answer))

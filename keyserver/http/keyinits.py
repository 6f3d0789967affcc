"""KeyInit repository endpoints (§9, §12): AddKeyInit, FetchKeyInit and FlushKeyInit,
and the fetch rate limits."""

from __future__ import annotations

import random

from flask import Blueprint, Response, current_app, jsonify, request

from client.protocol.encoding import b64url_decode
from client.protocol.errors import RateLimited

from ..service.keyinits import add_keyinits, fetch_keyinit, flush_keyinits
from ..storage.db import get_db, write
from .context import charger, policy, request_now, sign
from .params import json_body
from .ratelimit import SlidingWindow

bp = Blueprint("keyinits", __name__, url_prefix="/v1/keyinits")

#: ``app.extensions`` key of the ``random.Random`` behind the fallback choice; tests
#: put a seeded one there. Production draws from the operating system.
RNG = "keyserver.keyinit_rng"
_SYSTEM_RANDOM = random.SystemRandom()

def _path_sigkeyhash(value: str) -> bytes:
    return b64url_decode(value, "sigkeyhash (32 bytes, unpadded base64url)", length=32)


def _limiters() -> tuple[SlidingWindow, SlidingWindow]:
    """This process's fetch limits: per client address, per sigkeyhash."""
    limiters = current_app.extensions.get("keyserver.keyinit_fetch_limits")
    if limiters is None:
        limiters = current_app.extensions.setdefault("keyserver.keyinit_fetch_limits", (
            SlidingWindow(policy().keyinit_fetch_rate_per_address),
            SlidingWindow(policy().keyinit_fetch_rate_per_sigkeyhash)))
    return limiters


def _rate_limit(key_hash: bytes, now: int) -> None:
    per_address, per_sigkeyhash = _limiters()
    if not per_address.acquire(request.remote_addr, now):
        raise RateLimited(f"more than {per_address.limit} KeyInit fetches a minute from "
                          "your address: retry in a minute")
    if not per_sigkeyhash.acquire(key_hash, now):
        raise RateLimited(f"more than {per_sigkeyhash.limit} KeyInit fetches a minute for "
                          "this sigkeyhash: retry in a minute")


@bp.post("")
def add() -> Response:
    receipt = add_keyinits(get_db(), write, json_body(), request_now(), policy().keyinits,
                           charger(), sign)
    return jsonify(receipt)


@bp.post("/<key_hash>/fetch")
def fetch(key_hash: str) -> Response:
    parsed = _path_sigkeyhash(key_hash)
    now = request_now()
    _rate_limit(parsed, now)
    rng = current_app.extensions.get(RNG, _SYSTEM_RANDOM)
    keyinit = fetch_keyinit(write, parsed, now, rng)
    # Stored as canonical JSON already: wrapped as is rather than parsed and re-encoded
    # (the hot path of the repository; jsonify would produce the same bytes).
    return Response(f'{{"keyinit":{keyinit}}}\n', mimetype="application/json")


@bp.post("/<key_hash>/flush")
def flush(key_hash: str) -> Response:
    parsed = _path_sigkeyhash(key_hash)
    flushed = flush_keyinits(write, parsed, json_body(), request_now(), policy().keyinits)
    return jsonify(flushed=flushed)

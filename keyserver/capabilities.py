"""``GET /v1/capabilities`` (§12): what this server is, offers and limits, signed."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, jsonify

from client.protocol.encoding import b64encode

from .clock import now_ms

from . import chainstore, signing, tokenkeys
from .db import get_db

bp = Blueprint("capabilities", __name__, url_prefix="/v1")

METHODS = [
    "KeyRepository.Capabilities",
    "KeyHashchain.FetchHashChain",
    "KeyHashchain.FetchLastHashChain",
    "KeyHashchain.LookupUID",
    "KeyRepository.CreateUID",
    "KeyRepository.UpdateUID",
    "KeyRepository.FetchUID",
    "KeyInitRepository.AddKeyInit",
    "KeyInitRepository.FetchKeyInit",
    "KeyInitRepository.FlushKeyInit",
]


def limits(app: Flask) -> dict:
    config = app.config
    return {
        "max_chunk": config["MAX_CHUNK"],
        "max_uid_lifetime_ms": config["MAX_UID_LIFETIME"],
        "reclaim_grace_ms": config["RECLAIM_GRACE"],
        "lastentry_max_age_ms": config["LASTENTRY_MAX_AGE"],
        "max_keyinit_lifetime_ms": config["MAX_KEYINIT_LIFETIME"],
        "max_keyinits_per_identity": config["MAX_KEYINITS_PER_IDENTITY"],
        "max_keyinits_per_request": config["MAX_KEYINITS_PER_REQUEST"],
        "max_request_bytes": config["MAX_REQUEST_BYTES"],
    }


def keyinit_repository_uris(app: Flask) -> list[str]:
    return list(app.config["KEYINIT_REPOSITORY_URIS"]) or [app.config["BASE_URL"]]


@bp.get("/capabilities")
def capabilities() -> Response:
    app = current_app
    db = get_db()
    now = now_ms()
    head = chainstore.head(db)
    base = app.config["BASE_URL"]
    body = {
        "server_name": app.config["KEYSERVER_NAME"],
        "version": "1",
        "methods": METHODS,
        "domains": list(app.config["DOMAINS"]),
        "keyrepository_uris": [base],
        "keyinitrepository_uris": keyinit_repository_uris(app),
        "hashchain_uris": [base],
        "hashchain_head": {"pos": head.pos, "entry": b64encode(head.entry)},
        "sigpubkeys": {key.key_id: key.pubkey_b64 for key in signing.server_keys()},
        "token_keys": [key.to_json() for key in tokenkeys.valid_keys(db, now)],
        "token_prices": dict(app.config["TOKEN_PRICES"]),
        "limits": limits(app),
        "ts": now,
    }
    response = jsonify(signing.sign(body))
    response.headers["Cache-Control"] = "no-cache"
    return response

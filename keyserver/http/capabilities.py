"""``GET /v1/capabilities`` (§12): what this server is, offers and limits, signed."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..service.capabilities import capabilities as build_capabilities
from ..storage.db import get_db
from .context import policy, request_now, server_keys, sign, witness

bp = Blueprint("capabilities", __name__, url_prefix="/v1")


@bp.get("/capabilities")
def capabilities() -> Response:
    response = jsonify(build_capabilities(get_db(), policy(), server_keys(), sign,
                                          request_now(), witness().vkey))
    response.headers["Cache-Control"] = "no-cache"
    return response

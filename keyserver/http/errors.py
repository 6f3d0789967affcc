"""One place that turns every failure into ``{"errcode", "error"}`` (§1, §12).

Rules raise ``client.protocol.errors.ProtocolError`` subclasses; this module owns the
errcode → HTTP status table and the handlers, so no view builds an error body.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, g, jsonify
from werkzeug.exceptions import HTTPException

from client.protocol.errors import BY_ERRCODE, ProtocolError

from ..storage.db import BUSY_RETRY_S, StorageUnavailable, unavailable
from .context import www_authenticate

STATUS: dict[str, int] = {
    "BAD_REQUEST": 400,
    "INVALID_MESSAGE": 400,
    "INVALID_IDENTITY": 400,
    "INVALID_SIGNATURE": 400,
    "STALE_LASTENTRY": 400,
    "INVALID_VALIDITY": 400,
    "TOKEN_REQUIRED": 401,
    "TOKEN_INVALID": 401,
    "TOKEN_SPENT": 401,
    "DOMAIN_NOT_SERVED": 403,
    "RESERVED_IDENTITY": 403,
    "VOUCHER_INVALID": 403,
    "NOT_FOUND": 404,
    "NO_KEYINIT": 404,
    "IDENTITY_TAKEN": 409,
    "MSGCOUNT_MISMATCH": 409,
    "KEY_IN_USE": 409,
    "KEYINIT_LIMIT": 409,
    "TOO_LARGE": 413,
    "RATE_LIMITED": 429,
    "UNAVAILABLE": 503,
}
assert STATUS.keys() == BY_ERRCODE.keys()

#: Seconds a rate-limited client is asked to wait (the limits count per minute).
RATE_LIMIT_RETRY_S = 60

# Werkzeug's own failures (routing, method, size) in the protocol's vocabulary.
_HTTP_ERRCODE = {404: "NOT_FOUND", 413: "TOO_LARGE", 429: "RATE_LIMITED", 503: "UNAVAILABLE"}


def error_response(errcode: str, message: str, status: int) -> Response:
    response = jsonify(errcode=errcode, error=message)
    response.status_code = status
    return response


def handle_protocol_error(exc: ProtocolError) -> Response:
    g.errcode = exc.errcode
    # An error raised with a status answers with it: C2SP tlog-witness (§8.1) fixes
    # statuses (403, 422) that §12's errcodes do not give.
    response = error_response(exc.errcode, exc.message, exc.status or STATUS[exc.errcode])
    if isinstance(exc, StorageUnavailable):
        # Nothing was written; the fault is logged once per episode (storage.db).
        response.headers["Retry-After"] = str(exc.retry_after_s)
    elif exc.errcode == "UNAVAILABLE":
        response.headers["Retry-After"] = str(BUSY_RETRY_S)
    elif response.status_code == 401:
        # §10.2: a refused token comes with the challenge and key to pay with.
        challenge = www_authenticate()
        if challenge:
            response.headers["WWW-Authenticate"] = challenge
    elif exc.errcode == "RATE_LIMITED":
        # The limits are per minute: a client should not hammer before then.
        response.headers["Retry-After"] = str(RATE_LIMIT_RETRY_S)
    return response


def handle_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    response = error_response(_HTTP_ERRCODE.get(status, "BAD_REQUEST"),
                              exc.description or exc.name, status)
    if status == 405 and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def handle_unexpected(exc: Exception) -> Response:
    """A storage fault outside a write (a busy or failing database under a read, a
    full disk when a connection opens) is 503 with ``Retry-After``, logged once per
    episode; anything else is a bug: 500, logged with its traceback."""
    fault = unavailable(exc)
    if fault is not None:
        return handle_protocol_error(fault)
    g.errcode = "UNAVAILABLE"
    current_app.logger.exception("unhandled error", exc_info=exc)
    return error_response("UNAVAILABLE", "internal server error", 500)


def init_app(app: Flask) -> None:
    app.register_error_handler(ProtocolError, handle_protocol_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)

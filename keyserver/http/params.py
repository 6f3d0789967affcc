"""Parsing of request parameters and bodies at the HTTP edge (§1, §12)."""

from __future__ import annotations

import re

from flask import Flask, request
from werkzeug.exceptions import HTTPException

from client.protocol.encoding import parse_json_object
from client.protocol.errors import BadRequest, TooLarge
from client.protocol.wire import MSGPACK

from .context import policy

_INT = re.compile(r"^(0|[1-9][0-9]{0,15})$")


def query_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer query parameter (``^(0|[1-9][0-9]{0,15})$``) within bounds, else 400."""
    raw = request.args.get(name)
    if raw is None:
        return default
    value = path_int(raw, name)
    if value < minimum or (maximum is not None and value > maximum):
        raise BadRequest(f"{name} must be between {minimum} and {maximum}")
    return value


def required_int(name: str) -> int:
    """A query parameter that must be there, under the integer rule (§12), else 400."""
    raw = request.args.get(name)
    if raw is None:
        raise BadRequest(f"the query parameter {name} is required")
    return path_int(raw, name)


def path_int(raw: str, name: str) -> int:
    """An integer path parameter, under the rule of query parameters (§12), else 400."""
    if not _INT.fullmatch(raw):
        raise BadRequest(f"{name} must be a non-negative decimal integer")
    return int(raw)


def wants_msgpack() -> bool:
    return request.accept_mimetypes.best_match(["application/json", MSGPACK]) == MSGPACK


def json_body(max_bytes: int) -> dict:
    """The request body as a strict JSON object (§1), within ``body_bytes``' limits."""
    return parse_json_object(body_bytes(max_bytes))


def body_bytes(max_bytes: int) -> bytes:
    """The request body, of at most ``max_bytes`` (the endpoint's limit) or
    ``MAX_REQUEST_BYTES`` if that is lower; else 413.

    Each endpoint bounds its body by the largest valid one, so that parsing what a
    request without a token sends costs little (docs/decisions.md). A declared
    oversize body is refused before it is read. A body without Content-Length
    (chunked) is only limited while it is read: Werkzeug stops reading at the
    request's ``max_content_length`` without complaint, which is set one byte over
    the limit so that an oversize body shows here rather than being cut to a prefix
    that might parse. A body whose framing the server cannot decode (a bad chunk
    size, say) is the client's error, not the server's."""
    limit = min(max_bytes, policy().limits.max_request_bytes)
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"request body over {limit} bytes")
    request.max_content_length = limit + 1
    try:
        body = request.get_data(cache=False)
    except HTTPException:
        raise
    except Exception as exc:
        raise BadRequest(f"request body could not be read: {exc}") from None
    if len(body) > limit:
        raise TooLarge(f"request body over {limit} bytes")
    return body


def limit_body() -> None:
    """Refuse a declared oversize body before routing (Werkzeug only checks on read)."""
    limit = policy().limits.max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"request body over {limit} bytes")


def init_app(app: Flask) -> None:
    app.before_request(limit_body)

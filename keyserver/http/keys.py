"""``GET /_matrix/key/v2/server`` (§11.1): the server's key document, served from
bytes made at most once a minute per process (and again when the keys change or an
overlap ends), so that serving it costs almost nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass

from flask import Blueprint, Response, current_app

from ..service import serverkeys
from ..storage.signingkeys import KeyWindow
from .context import key_file, key_windows, policy, request_now

bp = Blueprint("keys", __name__, url_prefix="/_matrix/key/v2")

#: How long a process serves the same document bytes at most; its ``valid_until_ts``
#: is then at most this much short of ``now + KEY_VALIDITY``.
REBUILD_MS = 60 * 1000


@dataclass(frozen=True)
class _Cached:
    body: bytes
    windows: tuple[KeyWindow, ...]
    until: int


def document_bytes(now: int) -> bytes:
    """This server's key document as served: made again when the key windows change
    (a rotation, seen through ``context.key_windows`` without a query), when an overlap
    ends, or after ``REBUILD_MS``."""
    windows = key_windows()
    cached: _Cached | None = current_app.extensions.get("keyserver.key_document")
    if cached is None or cached.windows != windows or now >= cached.until:
        document = serverkeys.key_document(windows, key_file(), policy().server_name, now,
                                           policy().key_validity_ms)
        change = serverkeys.next_change(windows, now)
        until = min(now + REBUILD_MS, change) if change is not None else now + REBUILD_MS
        body = json.dumps(document, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()
        cached = _Cached(body, windows, until)
        current_app.extensions["keyserver.key_document"] = cached
    return cached.body


#: The key document's headers besides its length, here and in ``http.prepared``.
HEADERS = (("Content-Type", "application/json"), ("Cache-Control", "no-cache"))


@bp.get("/server")
def key_document() -> Response:
    return Response(document_bytes(request_now()), headers=HEADERS)

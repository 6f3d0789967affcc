"""The key document served before Flask's request machinery.

``GET /_matrix/key/v2/server`` (§11.1) is what every client, notary and Matrix server
asks a keyserver for, and its answer is bytes made at most once a minute
(``keys.document_bytes``). Through Flask, a request for them cost about 300 µs of CPU
(the request context, the URL map, the ``Response`` object, the hooks), most of the
server's CPU per answer, which kept the document below the rate issue 14 asks for
(docs/benchmarks.md). This WSGI layer answers that one request itself, with what the
Flask view sends (the same status, headers and body) and what every request leaves
behind (its ``X-Request-Id``, its log line and metrics under the view's endpoint,
``keys.key_document``). Any other request, a ``HEAD``, and any failure while making
the bytes (a database fault) go to Flask, whose view and error handlers answer as
they would without this layer.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from flask import Flask

from ..clock import now_ms
from . import observe
from .keys import HEADERS, bp, document_bytes, key_document

#: The one path answered here, and the endpoint its requests are logged and counted as.
PATH = "/_matrix/key/v2/server"
ENDPOINT = f"{bp.name}.{key_document.__name__}"


class PreparedAnswers:
    """WSGI middleware around ``app.wsgi_app``: the key document without Flask."""

    def __init__(self, app: Flask, wsgi_app: Callable):
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "GET":
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        try:
            with self.app.app_context():
                body = document_bytes(now_ms())
        except Exception:
            return self.wsgi_app(environ, start_response)
        rid = observe.request_id(environ)
        start_response("200 OK", [*HEADERS, ("Content-Length", str(len(body))),
                                  ("X-Request-Id", rid)])
        observe.record(self.app.extensions, rid, "GET", ENDPOINT, 200, "-",
                       time.perf_counter() - started)
        return [body]

"""What every request leaves behind for the operator: a request id (``X-Request-Id``,
taken from a proxy when it is a plain hex or UUID string, else made here, and sent
back), one log line (``keyserver.requests``), and the request metrics when
``METRICS_ENABLED``.

The log line names the endpoint (``users.put_user``), never the path: paths hold
identities, sigkeyhashes and UIDIndexes. Headers and bodies (tokens, voucher codes)
are never logged.

Everything here runs for every request, including the ones that must cost almost
nothing (the key document, the notary's cached answers: docs/benchmarks.md), so it
reads the request once and logs without what ``logging`` spends by default: the
caller's frame is not looked up, and the line goes to ``sys.stderr`` through one
plain handler rather than Flask's, which looks up the request's ``wsgi.errors`` at
every write.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time

from flask import Flask, Response, current_app, g, has_request_context, request
from flask.logging import default_handler, has_level_handler

log = logging.getLogger("keyserver.requests")

#: ``app.extensions`` key of the app's ``metrics.Metrics`` (absent: metrics are off).
METRICS = "keyserver.metrics"
#: An incoming request id is kept only when it cannot carry anything but an id.
_REQUEST_ID = re.compile(r"[0-9A-Fa-f-]{8,64}")


def request_id(environ: dict) -> str:
    """The request's id: the proxy's ``X-Request-Id`` when it can only be an id, else
    a new one."""
    incoming = environ.get("HTTP_X_REQUEST_ID", "")
    return incoming if _REQUEST_ID.fullmatch(incoming) else os.urandom(8).hex()


def start() -> None:
    """``before_request``: the request's id and start time."""
    g.request_id = request_id(request.environ)
    g.started = time.perf_counter()


def finish(response: Response) -> Response:
    """``after_request``: send the id back, log the request in one line, count it."""
    now = time.perf_counter()
    state = g._get_current_object()
    rid = getattr(state, "request_id", "-")
    response.headers["X-Request-Id"] = rid
    seconds = now - getattr(state, "started", now)
    current = request._get_current_object()
    record(current_app.extensions, rid, current.method, current.endpoint or "none",
           response.status_code, getattr(state, "errcode", "-"), seconds)
    return response


def record(extensions: dict, rid: str, method: str, endpoint: str, status: int,
           errcode: str, seconds: float) -> None:
    """Count a request in the app's metrics (``extensions``: the app's) and log its
    line; for the Flask views (``finish``) and the answers served before Flask
    (``http.prepared``) alike."""
    method = _method(method)
    metrics = extensions.get(METRICS)
    if metrics is not None:
        metrics.observe_request(endpoint, method, status, seconds)
    if log.isEnabledFor(logging.INFO):
        log.handle(log.makeRecord(
            log.name, logging.INFO, __file__, 0, _LINE,
            (rid, method, endpoint, status, errcode, seconds * 1000), None))


_LINE = "request id=%s method=%s endpoint=%s status=%d errcode=%s ms=%.1f"


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


def _method(method: str) -> str:
    """The method as logged and counted: any other word is ``other`` (a client
    chooses it, and must not grow the metrics or write into the log)."""
    return method if method in _METHODS else "other"


class RequestIdFilter(logging.Filter):
    """Ends a line logged while serving a request with that request's id (the storage
    faults, the unexpected errors), so it can be found beside the request's line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and "request_id" in g and not hasattr(record, "request_id"):
            record.request_id = g.request_id
            record.msg = f"{record.msg} request_id={g.request_id}"
        return True


_FILTER = RequestIdFilter()


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test may have replaced it
    since the app was made), in Flask's format."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(default_handler.formatter)

    @property                                           # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_STDERR = _Stderr()


def init_app(app: Flask) -> None:
    for name in ("keyserver", "keyserver.storage"):
        if _FILTER not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_FILTER)
    app.before_request(start)
    app.after_request(finish)
    if app.config["REQUEST_LOG"]:
        log.setLevel(logging.INFO)
        # Flask would install its own handler for "keyserver" on first use, unless the
        # logging configuration already handles it.
        logger = logging.getLogger(app.name)
        if not has_level_handler(logger):
            logger.addHandler(_STDERR)
    if app.config["METRICS_ENABLED"]:
        from . import metrics

        metrics.init_app(app)

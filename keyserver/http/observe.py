"""What every request leaves behind for the operator: a request id (``X-Request-Id``,
taken from a proxy when it is a plain hex or UUID string, else made here, and sent
back), one log line (``keyserver.requests``), and the request metrics when
``METRICS_ENABLED``.

The log line names the endpoint (``users.put_user``), never the path: paths hold
identities, sigkeyhashes and UIDIndexes. Headers and bodies (tokens, voucher codes)
are never logged.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

from flask import Flask, Response, current_app, g, has_request_context, request

log = logging.getLogger("keyserver.requests")

#: ``app.extensions`` key of the app's ``metrics.Metrics`` (absent: metrics are off).
METRICS = "keyserver.metrics"
#: An incoming request id is kept only when it cannot carry anything but an id.
_REQUEST_ID = re.compile(r"[0-9A-Fa-f-]{8,64}")


def start() -> None:
    """``before_request``: the request's id and start time."""
    incoming = request.headers.get("X-Request-Id", "")
    g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else secrets.token_hex(8)
    g.started = time.perf_counter()


def request_id() -> str:
    return g.get("request_id", "-")


def finish(response: Response) -> Response:
    """``after_request``: send the id back, log the request in one line, count it."""
    response.headers["X-Request-Id"] = request_id()
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    endpoint = request.endpoint or "none"
    metrics = current_app.extensions.get(METRICS)
    if metrics is not None:
        metrics.observe_request(endpoint, request.method, response.status_code, seconds)
    if log.isEnabledFor(logging.INFO):
        log.info("request id=%s method=%s endpoint=%s status=%d errcode=%s ms=%.1f",
                 request_id(), _method(request.method), endpoint, response.status_code,
                 g.get("errcode", "-"), seconds * 1000)
    return response


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


def init_app(app: Flask) -> None:
    for name in ("keyserver", "keyserver.storage"):
        if _FILTER not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_FILTER)
    app.before_request(start)
    app.after_request(finish)
    if app.config["REQUEST_LOG"]:
        log.setLevel(logging.INFO)
        app.logger   # Flask installs its stderr handler for "keyserver" on first use
    if app.config["METRICS_ENABLED"]:
        from . import metrics

        metrics.init_app(app)

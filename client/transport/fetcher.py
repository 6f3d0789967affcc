"""Moving bytes: one abstract ``_fetch`` and size-bounded public calls.

Every foreign exception becomes ``TransportError``; any answer outside 2xx
becomes the ``ProtocolError`` subclass of its errcode, so callers only ever see
the protocol's own exception families. Redirects are never followed: the API has
none, and a 3xx (like a 1xx other than the interim ones ``http11`` skips) says
nothing of whether a write happened.

Only 429 ``RATE_LIMITED`` and 503 ``UNAVAILABLE`` are retried, with exponential
backoff (or the server's ``Retry-After`` when it asks for a short wait): they are
the answers that say the request did nothing and may simply be sent again. A
timeout or a dropped connection is not retried, since a write may have happened.
"""

from __future__ import annotations

import abc
import errno
import json
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

from ..protocol.errors import BY_ERRCODE, ProtocolError, TransportError, Unreachable
from .http11 import BodyTooLarge, Connection, HTTPError, RemoteDisconnected
from ..protocol.urls import URLError, split_url

#: Largest error body read from a server.
MAX_ERROR_BYTES = 64 * 1024

#: A ``Retry-After`` in seconds (RFC 9110 §10.2.3), ASCII digits only: ``str.isdigit``
#: also takes "²", which ``float`` refuses. (A date counts as absent.)
_DELAY_SECONDS = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


#: Statuses that mean "nothing was done, try again later".
RETRY_STATUSES = frozenset({429, 503})


class Fetcher(abc.ABC):
    """Performs HTTP requests; subclasses implement ``_fetch`` only.

    ``retries`` extra attempts follow a 429 or 503 answer, the n-th after
    ``backoff * 2**n`` seconds, or after the answer's ``Retry-After`` if that is at
    most ``max_wait``; an answer asking for a longer wait is raised at once.
    """

    retries: int = 4
    backoff: float = 0.25
    max_wait: float = 10.0
    sleep = staticmethod(time.sleep)

    @abc.abstractmethod
    def _fetch(self, request: Request, max_length: int) -> Response:
        """Return the response, reading at most ``max_length`` body bytes (raise if more)."""

    def fetch(self, request: Request, max_length: int) -> Response:
        """Like ``_fetch`` but any failure to get the bytes is ``TransportError``,
        and any answer outside 2xx is raised as the errcode's ``ProtocolError``
        (after the retries of 429 and 503)."""
        for attempt in range(self.retries + 1):
            try:
                response = self._fetch(request, max_length)
            except (TransportError, ProtocolError):
                raise
            except Exception as exc:
                raise describe_failure(request.url, exc) from exc
            if 200 <= response.status < 300:
                return response
            wait = self._retry_wait(response, attempt)
            if wait is None:
                break
            self.sleep(wait)
        raise error_from_response(request, response)

    def close(self) -> None:
        """Close the connections of the calling thread (a fetcher that keeps none has
        nothing to close)."""

    def _retry_wait(self, response: Response, attempt: int) -> float | None:
        """Seconds to wait before retrying ``response``, or None to give up."""
        if response.status not in RETRY_STATUSES or attempt >= self.retries:
            return None
        asked = response.headers.get("retry-after", "")
        wait = float(asked) if _DELAY_SECONDS.fullmatch(asked) else self.backoff * 2 ** attempt
        return wait if wait <= self.max_wait else None


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url``: what a network failure concerns."""
    return "/".join(url.split("/")[:3])


def describe_failure(url: str, exc: Exception) -> TransportError:
    """A failure to exchange bytes with the server at ``url``, in one line that says
    what happened and what to do; ``Unreachable`` when no connection was made (the
    caller may offer the data it verified before)."""
    origin = _origin(url)
    ssl = sys.modules.get("ssl")   # loaded only for https
    if isinstance(exc, ConnectionRefusedError):
        return Unreachable(f"cannot reach {origin}: connection refused — is the server "
                           "running?")
    if isinstance(exc, socket.gaierror):
        return Unreachable(f"cannot reach {origin}: its name does not resolve — check the URL"
                           " and the network")
    if isinstance(exc, TimeoutError):
        return Unreachable(f"{origin} did not answer in time: {exc or 'timed out'}")
    if ssl is not None and isinstance(exc, ssl.SSLCertVerificationError):
        return TransportError(f"{origin}: its TLS certificate is not trusted "
                              f"({exc.verify_message}); if it is signed by your own CA, name "
                              "it with SSL_CERT_FILE")
    if ssl is not None and isinstance(exc, ssl.SSLError):
        if exc.reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE",
                          "PACKET_LENGTH_TOO_LONG"):
            return TransportError(f"{origin} does not speak https: should the URL start with "
                                  "http://?")
        return TransportError(f"{origin}: the TLS connection failed ({exc.reason or exc})")
    if isinstance(exc, HTTPError):
        return TransportError(f"{origin} does not answer like a web server: {exc}")
    if isinstance(exc, (ConnectionError, EOFError)):
        return TransportError(f"{origin} dropped the connection ({exc}): the answer is lost")
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE_ERRNOS:
        return Unreachable(f"cannot reach {origin}: {exc.strerror.lower()}")
    return TransportError(f"{origin}: {exc}")


#: Errors of a connection that could not be made.
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN,
                       errno.ECONNABORTED}


def error_from_response(request: Request, response: Response) -> ProtocolError:
    """The errcode's ``ProtocolError`` for an answer outside 2xx; a body without one
    (not JSON, nested past the recursion limit, other fields, a redirect's) keeps the
    status, as errcode ``HTTP_<status>``."""
    try:
        body = json.loads(response.body[:MAX_ERROR_BYTES])
        errcode, message = body["errcode"], body["error"]
    except (ValueError, RecursionError, KeyError, TypeError):
        errcode = ""
        message = (f"{request.url} answered HTTP {response.status}: "
                   + response.body[:200].decode("utf-8", "replace"))
    cls = BY_ERRCODE.get(errcode, ProtocolError)
    error = cls(message, status=response.status, request=f"{request.method} {request.url}")
    if cls is ProtocolError:
        error.errcode = errcode or f"HTTP_{response.status}"
    return error


class HTTPFetcher(Fetcher):
    """The real fetcher: one keep-alive connection per host and thread, timeouts,
    size limits. (``requests`` would cost every ``keyclient`` command about 0.1 s
    of imports, ``http.client`` 20 to 35 ms: see ``http11``.)

    ``timeout`` bounds each read of the socket, ``deadline`` each whole answer, so
    a server dripping bytes cannot hold a sync forever. The default of 180 s lets
    the largest answer, a 10,000-entry chain chunk (about 1.5 MB, at most 2.1 MB),
    arrive over a link of 100 kbit/s."""

    def __init__(self, timeout: float = 30.0, deadline: float = 180.0):
        self.timeout, self.deadline = timeout, deadline
        self._local = threading.local()

    def _connections(self) -> dict[tuple[str, str, int], Connection]:
        return self._local.__dict__.setdefault("connections", {})

    def _fetch(self, request: Request, max_length: int) -> Response:
        try:
            scheme, host, port, target = split_url(request.url)
        except URLError as exc:
            raise TransportError(str(exc)) from None
        connections = self._connections()
        key = (scheme, host, port)
        while True:
            connection = connections.get(key)
            reused = connection is not None and connection.open
            if connection is None:
                connection = connections[key] = Connection(scheme, host, port, self.timeout,
                                                           self.deadline)
            try:
                status, headers, body = connection.request(
                    request.method, target, request.headers, request.body, max_length,
                    MAX_ERROR_BYTES)
            except (RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if reused:
                    continue   # the server closed an idle keep-alive connection: no answer yet
                raise
            except BodyTooLarge as exc:
                raise TransportError(f"{request.url}: {exc}") from None
            return Response(status, headers, body)

    def close(self) -> None:
        """Close this thread's connections."""
        connections = self._connections()
        for connection in connections.values():
            connection.close()
        connections.clear()


def default_fetcher() -> Fetcher:
    """The fetcher of a ``KeyserverAPI`` given none: a new ``HTTPFetcher``.

    This is the one seam through which tests reach a server without a process:
    they replace this function (``tests/conftest.py``, ``app_server``) so that every
    client object, also those the ``keyclient`` commands build, talks to a Flask
    app in-process."""
    return HTTPFetcher()

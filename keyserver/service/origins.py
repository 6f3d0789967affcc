"""Asking another server (§11.4, §8.1): an origin for its key document, a witness to
cosign a checkpoint. The one place where the server makes requests of its own,
bounded in time and size, so that a slow or hostile server can neither hold a
worker past its budget nor fill its memory.

Why not the client's ``client.transport.http11``, which has both bounds: the server
imports nothing of the client but ``client.protocol`` (tests/test_architecture.py).
``http.client`` bounds each read by the socket's timeout, but not a whole answer: a
server sending one header byte a second passes every read's timeout. So a timer
shuts the socket down at the deadline, and whatever read is blocked then returns at
once. Its header lines and count are bounded by ``http.client`` itself (64 KiB, 100).
Name resolution is not bounded (the servers are the operator's own configuration).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass


class OriginError(Exception):
    """The server did not answer within the time and size allowed."""


@dataclass(frozen=True)
class Answer:
    status: int
    #: The Content-Type header ("" when absent).
    content_type: str
    body: bytes


def fetch_document(url: str, deadline: float, max_bytes: int) -> bytes:
    """The body of a 200 answer to ``GET url``, of at most ``max_bytes``, arrived in
    full before ``deadline`` (a ``time.monotonic()`` value); else ``OriginError``.
    Redirects are not followed (an origin serves its own document)."""
    answer = ask(url, deadline, max_bytes, headers={"Accept": "application/json"})
    if answer.status != 200:
        raise OriginError(f"{url}: answered {answer.status}")
    return answer.body


def ask(url: str, deadline: float, max_bytes: int, method: str = "GET",
        body: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
    """The answer to ``method url`` (whatever its status), its body of at most
    ``max_bytes``, arrived in full before ``deadline``; else ``OriginError``.
    Redirects are not followed."""
    parts = urllib.parse.urlsplit(url)
    left = deadline - time.monotonic()
    if left <= 0:
        raise OriginError(f"{url}: no time left to ask")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname, parts.port, timeout=left)
    cut = threading.Event()
    timer: threading.Timer | None = None
    response: http.client.HTTPResponse | None = None
    try:
        connection.connect()
        left = deadline - time.monotonic()
        if left <= 0:
            raise OriginError(f"{url}: connecting took the whole time allowed")
        timer = threading.Timer(left, _cut, (connection, cut))
        timer.daemon = True
        timer.start()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, path or "/", body=body, headers=headers or {})
        response = connection.getresponse()
        declared = response.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise OriginError(f"{url}: an answer of {declared} bytes, over {max_bytes}")
        data = response.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise OriginError(f"{url}: an answer over {max_bytes} bytes")
        if cut.is_set():
            raise OriginError(f"{url}: took more than the time allowed")
        return Answer(response.status, response.getheader("Content-Type", ""), data)
    except OriginError:
        raise
    except Exception as exc:
        # The socket's own timeout and the timer both end at the deadline: whichever
        # fires first, the answer took too long.
        if cut.is_set() or isinstance(exc, TimeoutError):
            raise OriginError(f"{url}: took more than the time allowed") from None
        raise OriginError(f"{url}: {type(exc).__name__}: {exc}") from None
    finally:
        if timer is not None:
            timer.cancel()
        if response is not None:
            response.close()        # it holds the socket open after the connection's close
        connection.close()


def _cut(connection: http.client.HTTPConnection, cut: threading.Event) -> None:
    """The deadline passed: end the connection under whatever read is waiting."""
    cut.set()
    if connection.sock is not None:
        with contextlib.suppress(OSError):
            connection.sock.shutdown(socket.SHUT_RDWR)

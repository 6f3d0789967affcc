"""A small HTTP/1.1 client connection, for the fetcher.

Why not ``http.client``: importing it, with the ``email`` package and ``ssl`` it
pulls in, costs every ``keyclient`` command 20 to 35 ms on the project machine,
a sixth of the 0.2 s a sync or lookup of a known identity may take. The keyserver
protocol needs little of HTTP: a request with a ``Content-Length`` body, and an
answer delimited by ``Content-Length``, chunked coding or the end of the
connection (RFC 9112 §6.3), on a connection kept alive when both sides allow it.
``ssl`` is loaded only for https.

Two clocks bound an answer: ``timeout`` each read of the socket, and ``deadline``
the whole answer, since a server sending a byte now and then passes every read's
timeout and would otherwise hold the client forever.
"""

from __future__ import annotations

import io
import socket
import time
from typing import BinaryIO

from ..protocol.urls import DEFAULT_PORTS

#: Limits on what a server may send before the body (RFC 9112 leaves them to us).
MAX_LINE = 64 * 1024
MAX_HEADERS = 100


class HTTPError(Exception):
    """The server's answer is not HTTP/1.1 as this client reads it."""


class RemoteDisconnected(ConnectionError):
    """The connection ended before an answer began (e.g. an idle keep-alive
    connection the server had closed: the request was not read)."""


class AnswerTooSlow(HTTPError, TimeoutError):
    """The answer did not arrive in full within the connection's ``deadline``
    (a timeout, for callers that handle those)."""

    def __init__(self, deadline: float):
        super().__init__(f"the server took more than {deadline:g} s to answer")


class BodyTooLarge(HTTPError):
    def __init__(self, size: int | None, limit: int):
        super().__init__(f"answer of {size} bytes exceeds {limit}" if size is not None
                         else f"answer exceeds {limit} bytes")


class _DeadlineSocketIO(io.RawIOBase):
    """The socket under the buffered answer file, each ``recv`` bounded by both
    ``timeout`` and the time left before the answer's deadline.

    The check sits here, below the buffer, because one ``readline`` or ``read(n)``
    of the buffer may loop over many ``recv`` calls: each one is bounded."""

    def __init__(self, sock: socket.socket, timeout: float):
        self._sock, self.timeout = sock, timeout
        self.deadline = self._due = 0.0

    def start(self, deadline: float) -> None:
        """Give the next answer ``deadline`` seconds from now."""
        self.deadline, self._due = deadline, time.monotonic() + deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self._due - time.monotonic()
        if left <= 0:
            raise AnswerTooSlow(self.deadline)
        self._sock.settimeout(min(self.timeout, left))
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            if left < self.timeout:
                raise AnswerTooSlow(self.deadline) from None
            raise


class Connection:
    """One connection to ``host:port``, opened at the first request; reusable
    while ``open`` after a request.

    Each read of the socket must return within ``timeout`` seconds, and each
    answer arrive in full within ``deadline`` seconds of its request being sent
    (else ``AnswerTooSlow``)."""

    def __init__(self, scheme: str, host: str, port: int, timeout: float, deadline: float):
        self.scheme, self.host, self.port, self.timeout = scheme, host, port, timeout
        self.deadline = deadline
        name = f"[{host}]" if ":" in host else host
        self.host_header = name if port == DEFAULT_PORTS[scheme] else f"{name}:{port}"
        self._sock: socket.socket | None = None
        self._raw: _DeadlineSocketIO | None = None
        self._file: BinaryIO | None = None

    @property
    def open(self) -> bool:
        return self._sock is not None

    def _connect(self) -> None:
        # An ASCII name as bytes spares getaddrinfo the idna codec (and its import).
        host = self.host.encode("ascii") if self.host.isascii() else self.host
        sock = socket.create_connection((host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                import ssl

                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self._raw = _DeadlineSocketIO(sock, self.timeout)
        self._sock, self._file = sock, io.BufferedReader(self._raw)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._raw = self._file = None

    def __del__(self) -> None:
        # A connection dropped while open (the keep-alive connection of a finished
        # worker thread, such as a sync's prefetch) closes with it, instead of
        # leaving its socket to the garbage collector.
        self.close()

    def request(self, method: str, target: str, headers: dict[str, str], body: bytes | None,
                max_length: int, max_error_length: int) -> tuple[int, dict[str, str], bytes]:
        """Send one request and read its answer: status, headers (lower-case names)
        and body, which may hold at most ``max_length`` bytes (``max_error_length``
        for any status outside 2xx, which the caller takes for an error). The
        connection stays open if it can be reused.
        """
        parts = [method, target, *headers, *headers.values()]
        if any("\r" in part or "\n" in part for part in parts) or " " in method + target:
            raise HTTPError("a line break or space where the request line or a header ends")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = "\r\n".join(lines)
        if self._sock is None:
            self._connect()
        assert self._sock is not None and self._raw is not None
        try:
            self._sock.settimeout(self.timeout)     # the last answer's reads may have cut it
            self._sock.sendall(head.encode("latin-1") + b"\r\n\r\n" + (body or b""))
            self._raw.start(self.deadline)
            status, answer_headers, reusable = self._read_head()
            limit = max_length if 200 <= status < 300 else max_error_length
            content, delimited = self._read_body(method, status, answer_headers, limit)
        except BaseException:
            self.close()
            raise
        if not (reusable and delimited):
            self.close()
        return status, answer_headers, content

    def _line(self) -> bytes:
        assert self._file is not None
        line = self._file.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise HTTPError("answer line too long")
        return line

    def _read_head(self) -> tuple[int, dict[str, str], bool]:
        while True:
            line = self._line()
            if not line:
                raise RemoteDisconnected("the server closed the connection without answering")
            version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
            code = rest[:3]
            if version not in ("HTTP/1.1", "HTTP/1.0") or not (code.isascii() and code.isdigit()) \
                    or rest[3:4] not in ("", " "):
                raise HTTPError(f"not an HTTP/1.x status line: {line[:80]!r}")
            headers = self._read_fields()
            status = int(code)
            if 100 <= status < 200 and status != 101:
                continue                             # interim answer: the real one follows
            tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
            reusable = "close" not in tokens and (version == "HTTP/1.1" or "keep-alive" in tokens)
            return status, headers, reusable

    def _read_fields(self) -> dict[str, str]:
        """Header (or trailer) fields up to the empty line; repeated names are joined
        with commas (RFC 9110 §5.3)."""
        fields: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n"):
                return fields
            if not line:
                raise HTTPError("the connection ended in the answer's header")
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
                raise HTTPError(f"malformed header line {line[:80]!r}")
            name, value = name.lower(), value.strip()
            fields[name] = f"{fields[name]}, {value}" if name in fields else value
        raise HTTPError(f"more than {MAX_HEADERS} header lines")

    def _read_body(self, method: str, status: int, headers: dict[str, str],
                   limit: int) -> tuple[bytes, bool]:
        """The body and whether its end was delimited (else it ran to the close)."""
        assert self._file is not None
        if method == "HEAD" or status in (204, 304):
            return b"", True
        codings = [c.strip().lower() for c in headers.get("transfer-encoding", "").split(",")
                   if c.strip()]
        if codings:
            if codings[-1] != "chunked":
                return self._read_to_close(limit), False
            # With a Content-Length as well, the framing is suspect (RFC 9112 §6.3):
            # the chunks win and the connection is not used again.
            return self._read_chunked(limit), "content-length" not in headers
        declared = headers.get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                raise HTTPError(f"bad Content-Length {declared[:40]!r}")
            size = int(declared)
            if size > limit:
                raise BodyTooLarge(size, limit)
            content = self._file.read(size)
            if len(content) != size:
                raise HTTPError(f"the answer ended after {len(content)} of {size} bytes")
            return content, True
        return self._read_to_close(limit), False

    def _read_to_close(self, limit: int) -> bytes:
        assert self._file is not None
        content = self._file.read(limit + 1)
        if len(content) > limit:
            raise BodyTooLarge(None, limit)
        return content

    def _read_chunked(self, limit: int) -> bytes:
        assert self._file is not None
        parts, total = [], 0
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                raise HTTPError(f"bad chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if size == 0:
                self._read_fields()                  # trailers, ignored
                return b"".join(parts)
            total += size
            if total > limit:
                raise BodyTooLarge(None, limit)
            chunk = self._file.read(size)
            if len(chunk) != size or self._line() not in (b"\r\n", b"\n"):
                raise HTTPError("a chunk of the answer is truncated")
            parts.append(chunk)

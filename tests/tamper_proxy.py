"""A malicious keyserver for end-to-end tests: an HTTP proxy in a thread that
forwards every request to a real keyserver and lets the test rewrite answers.

``TamperProxy(upstream_url)`` listens on a free 127.0.0.1 port. Its ``attack`` is
a function ``attack(request) -> Answer``; the default (``None``) is an honest
proxy. An attack calls ``request.forward()`` to get the real server's answer
(optionally for another path) and returns it rewritten, or answers by itself.
An exception inside an attack is kept in ``proxy.errors`` (and answered with a
500): a test must check that list, so that a broken attack is never mistaken
for the client detecting one. ``simulator.TamperFetcher`` runs the same attacks
in-process, forwarding to a Flask app's test client instead of over HTTP.

The helpers below build the attacks the tests need: chain views (the real chain
run through a ``forge`` function, served in msgpack or JSON), relinking entries
so that only the check under test can catch them, fabricating well-linked
entries, and re-signing replies as the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import msgpack
import nacl.signing
import requests

from client.protocol.encoding import b64decode, b64encode
from client.protocol.hashchain import ENTRY_TYPE, ZERO_HASH
from client.protocol.serverkeys import sign_key_document
from client.protocol.signedjson import sign_json

MSGPACK = "application/msgpack"
JSON = "application/json"
#: Headers that describe one hop, or that the proxy recomputes.
_HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                          "te", "upgrade", "content-length", "content-encoding", "host",
                          "date", "server"})
#: Larger than any test chain: one request gets the whole real chain.
WHOLE_CHAIN = 10000


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)

    @classmethod
    def of_json(cls, obj, status: int = 200) -> Answer:
        return cls(status, {"Content-Type": JSON}, json.dumps(obj).encode())


#: Passes a request on to the real server: ``send(method, target, headers, body)``.
Send = Callable[[str, str, dict[str, str], bytes | None], Answer]


def answer_headers(headers) -> dict[str, str]:
    """The end-to-end headers of a real answer (those of one hop dropped)."""
    return {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}


class Request:
    """One request the client sent, as an attack sees it. ``send`` reaches the real
    server: over HTTP for the proxy, through the app's test client for
    ``simulator.TamperFetcher``."""

    def __init__(self, send: Send, method: str, path: str, headers: dict[str, str],
                 body: bytes | None):
        self.send, self.method, self.path, self.headers, self.body = (
            send, method, path, headers, body)
        parts = urlsplit(path)
        self.route = parts.path
        self.query = {k: v[-1] for k, v in parse_qs(parts.query).items()}

    def forward(self, path: str | None = None, headers: dict[str, str] | None = None) -> Answer:
        """The real server's answer to this request (or to GET ``path`` with ``headers``)."""
        if path is None:
            return self.send(self.method, self.path, self.headers, self.body)
        return self.send("GET", path, self.headers if headers is None else headers, None)


Attack = Callable[[Request], Answer]


class Tampering:
    """What the proxy and the in-process ``TamperFetcher`` share: the test's
    ``attack`` (None: honest), the requests ``seen``, and the ``errors`` raised
    inside the attack, each answered with a 500 (a test checks the list, so that a
    broken attack is never mistaken for the client detecting one)."""

    def __init__(self):
        self.attack: Attack | None = None
        self.errors: list[Exception] = []
        self.seen: list[tuple[str, str]] = []

    def answer(self, request: Request) -> Answer:
        self.seen.append((request.method, request.path))
        try:
            return (self.attack or Request.forward)(request)
        except Exception as exc:  # a bug in the test's attack, not a detection
            self.errors.append(exc)
            return Answer(500, {"Content-Type": "text/plain"},
                          f"attack failed: {exc!r}".encode())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"   # one request per connection: nothing lingers

    def _handle(self) -> None:
        proxy: TamperProxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = proxy.answer(Request(proxy.send, self.command, self.path,
                                      answer_headers(self.headers), body))
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            if name.lower() not in _HOP_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    do_GET = do_PUT = do_POST = do_DELETE = _handle

    def log_message(self, format, *args) -> None:  # quiet
        pass


class TamperProxy(Tampering):
    """The proxy server; use as a context manager (or call ``close``)."""

    def __init__(self, upstream: str):
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.proxy = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def send(self, method: str, target: str, headers: dict[str, str],
             body: bytes | None) -> Answer:
        """The upstream server's answer, over HTTP."""
        response = requests.request(method, self.upstream + target, headers=headers,
                                    data=body, timeout=30, allow_redirects=False)
        with response:
            return Answer(response.status_code, answer_headers(response.headers),
                          response.content)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def __enter__(self) -> TamperProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- Chains ------------------------------------------------------------------------

def link(body: bytes, prev_hash: bytes) -> bytes:
    """An entry with ``body`` (TYPE onwards, any length) whose H links to ``prev_hash``."""
    return hashlib.sha256(body + prev_hash).digest() + body


def relink(entries: list[bytes], start: int) -> list[bytes]:
    """Recompute H of ``entries[start:]`` so that each links to its predecessor, as a
    server forging a history would."""
    entries = list(entries)
    for pos in range(start, len(entries)):
        prev = entries[pos - 1][:32] if pos else ZERO_HASH
        entries[pos] = link(entries[pos][32:], prev)
    return entries


def fabricated_entry(prev_hash: bytes) -> bytes:
    """A well-formed 153-byte entry of nobody, linked to ``prev_hash``."""
    return link(bytes([ENTRY_TYPE]) + os.urandom(120), prev_hash)


def extend(entries: list[bytes], length: int) -> list[bytes]:
    """``entries`` followed by fabricated, well-linked entries up to ``length``."""
    entries = list(entries)
    while len(entries) < length:
        entries.append(fabricated_entry(entries[-1][:32]))
    return entries


def chunk_answer(entries: list[bytes], first_pos: int, head_pos: int, encoding: str) -> Answer:
    """A FetchHashChain answer (§12) in either encoding, whatever the client asked for."""
    body = {"first_pos": first_pos, "head_pos": head_pos}
    if encoding == MSGPACK:
        body["entries"] = entries
        return Answer(200, {"Content-Type": MSGPACK}, msgpack.packb(body, use_bin_type=True))
    body["entries"] = [b64encode(entry) for entry in entries]
    return Answer.of_json(body)


def real_chain(request: Request) -> list[bytes]:
    """The real server's whole chain, fetched through ``request``."""
    answer = request.forward(f"/v1/hashchain?start=0&count={WHOLE_CHAIN}", {"Accept": MSGPACK})
    entries = msgpack.unpackb(answer.body)["entries"]
    assert len(entries) < WHOLE_CHAIN
    return entries


class ChainView:
    """An attack serving ``forge(real chain)`` as the chain, in ``encoding``: chunks
    and the head come from the forged list, everything else is forwarded (or
    handed to ``other``)."""

    def __init__(self, forge: Callable[[list[bytes]], list[bytes]], encoding: str = MSGPACK,
                 other: Attack | None = None):
        self.forge, self.encoding, self.other = forge, encoding, other
        self._cache: tuple[tuple[bytes, ...], list[bytes]] | None = None

    def chain(self, request: Request) -> list[bytes]:
        real = tuple(real_chain(request))
        if self._cache is None or self._cache[0] != real:
            self._cache = (real, self.forge(list(real)))
        return self._cache[1]

    def __call__(self, request: Request) -> Answer:
        if request.method == "GET" and request.route == "/v1/hashchain":
            entries = self.chain(request)
            start, count = int(request.query.get("start", 0)), int(request.query["count"])
            return chunk_answer(entries[start:start + count], start, len(entries) - 1,
                                self.encoding)
        if request.method == "GET" and request.route == "/v1/hashchain/head":
            entries = self.chain(request)
            real = request.forward().json()
            return Answer.of_json({"pos": len(entries) - 1, "entry": b64encode(entries[-1]),
                                   "ts": real["ts"]})
        return (self.other or Request.forward)(request)


# --- Key documents (§11.1) ---------------------------------------------------------

KEY_DOCUMENT = "/_matrix/key/v2/server"


def key_document_changed(change: Callable[[dict], None],
                         keys: dict[str, nacl.signing.SigningKey],
                         server_name: str = "example.org") -> Attack:
    """An attack: the server's key document, unsigned, passed through ``change`` and
    signed again by ``keys`` (key id -> key) as ``server_name``."""
    def attack(request: Request) -> Answer:
        answer = request.forward()
        if request.route != KEY_DOCUMENT:
            return answer
        document = {k: v for k, v in answer.json().items() if k != "signatures"}
        change(document)
        return Answer.of_json(sign_key_document(document, server_name, keys))

    return attack


# --- Signed replies -----------------------------------------------------------------

def resign(reply: dict, signing_key: nacl.signing.SigningKey, key_id: str,
           server_name: str = "example.org") -> dict:
    """``reply`` with its signatures replaced by one of ``signing_key`` as the server."""
    unsigned = {k: v for k, v in reply.items() if k not in ("signatures", "unsigned")}
    return sign_json(unsigned, server_name, key_id, signing_key)


def capabilities_changed(change: Callable[[dict], dict | None], signed_by=None,
                         server_name: str = "example.org") -> Attack:
    """An attack on the capabilities: the real ones passed through ``change`` (in
    place, or returning the ones to serve), then, when ``signed_by`` (a signing key
    with ``signing_key`` and ``key_id``) is given, signed again by that key as the
    server: the server's own key when the attacker is the server itself."""
    def attack(request: Request) -> Answer:
        answer = request.forward()
        if request.route != "/v1/capabilities":
            return answer
        capabilities = answer.json()
        capabilities = change(capabilities) or capabilities
        if signed_by is not None:
            capabilities = resign(capabilities, signed_by.signing_key, signed_by.key_id,
                                  server_name)
        return Answer.of_json(capabilities)

    return attack


def reply_entry(reply: dict) -> bytes:
    return b64decode(reply["entry"]["hashchain_entry"])


def replies_changed(change: Callable[[dict], None], pos: int | None = None) -> Attack:
    """An attack passing each reply of every reply bundle (§5.1), or only the reply
    of position ``pos``, through ``change`` (in place), served in the encoding the
    client asked for."""

    def attack(request: Request) -> Answer:
        answer = request.forward()
        if request.method != "GET" or not request.route.startswith("/v1/uids/bundle/") \
                or answer.status != 200:
            return answer
        packed = answer.headers.get("Content-Type", "").startswith(MSGPACK)
        bundle = msgpack.unpackb(answer.body) if packed else answer.json()
        for reply in bundle["replies"]:
            if pos is None or reply["entry"]["hashchain_pos"] == pos:
                change(reply)
        if packed:
            return Answer(200, {"Content-Type": MSGPACK}, msgpack.packb(bundle))
        return Answer.of_json(bundle)

    return attack

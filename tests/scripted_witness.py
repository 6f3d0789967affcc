"""A scripted C2SP ``tlog-witness`` for the log side's tests (§8.1): an HTTP server on
127.0.0.1 that answers ``POST <prefix>/add-checkpoint`` as a witness would (the
size it holds, a 409 with it when ``old`` differs, the consistency proof checked,
a real ``cosignature/v1`` line), or as told: a fixed answer (``answer``), a hang
(``hang``), a cosignature by another key (``wrong_key``), or down (``stop``).

A proof that does not check is a bug of the log: it is kept in ``errors``, which
the tests assert empty, besides the 422 a witness answers.
"""

from __future__ import annotations

import contextlib
import http.server
import threading

import nacl.signing

from client.protocol.checkpoint import verify_checkpoint
from client.protocol.cosignature import (SIZE_CONTENT_TYPE, cosign, format_size,
                                         parse_add_checkpoint, witness_vkey)
from client.protocol.errors import BadRequest, VerificationError
from client.protocol.merkle import check_consistency
from client.protocol.note import VerifierKey, format_verifier_key
from conftest import free_port

PREFIX = "/witness"


class ScriptedWitness:
    def __init__(self, name: str, log_vkey: VerifierKey, timestamp: int = 1_700_000_000):
        self.name, self.log_vkey, self.timestamp = name, log_vkey, timestamp
        self.key = nacl.signing.SigningKey.generate()
        self.vkey = witness_vkey(name, self.key)
        #: The size and root of the checkpoint it holds (as a real witness stores them).
        self.size, self.root = 0, b""
        #: ``(old, tree size)`` of every request, in order.
        self.requests: list[tuple[int, int]] = []
        self.errors: list[str] = []
        #: ``(status, content type, body)`` answered instead of witnessing.
        self.answer: tuple[int, str, bytes] | None = None
        self.wrong_key = False
        self.hang = False
        self._release = threading.Event()
        self.port = free_port()
        self._server: http.server.ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    def config(self) -> dict:
        """Its entry in the log's ``WITNESSES``."""
        return {"url": self.url, "vkey": format_verifier_key(self.vkey)}

    def start(self) -> None:
        witness = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != f"{PREFIX}/add-checkpoint":
                    return self.reply(404, "text/plain", b"not found\n")
                self.reply(*witness.add_checkpoint(body))

            def reply(self, status, content_type, data):
                # The log hangs up on a witness that hangs: its late answer goes nowhere.
                with contextlib.suppress(ConnectionError):
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: nothing listens on its port any more."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def add_checkpoint(self, body: bytes) -> tuple[int, str, bytes]:
        try:
            request = parse_add_checkpoint(body)
        except BadRequest as exc:
            self.errors.append(f"malformed request: {exc}")
            return 400, "text/plain", b"malformed\n"
        checkpoint = request.note.checkpoint
        self.requests.append((request.old, checkpoint.tree_size))
        if self.hang:
            self._release.wait(30)
            return 503, "text/plain", b"late\n"
        if self.answer is not None:
            return self.answer
        try:
            verify_checkpoint(request.note, self.log_vkey)
        except VerificationError as exc:
            self.errors.append(f"not signed by the log: {exc}")
            return 403, "text/plain", b"no log signature\n"
        if request.old != self.size:
            return 409, SIZE_CONTENT_TYPE, format_size(self.size)
        try:
            check_consistency(request.old, checkpoint.tree_size, self.root,
                              checkpoint.root_hash, request.proof)
        except VerificationError as exc:
            self.errors.append(f"bad consistency proof from {request.old}: {exc}")
            return 422, "text/plain", b"bad proof\n"
        self.size, self.root = checkpoint.tree_size, checkpoint.root_hash
        key = nacl.signing.SigningKey.generate() if self.wrong_key else self.key
        line = cosign(request.note.body, self.vkey, key, self.timestamp).line()
        return 200, "text/plain", line.encode()

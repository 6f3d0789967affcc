"""A keyserver without a process, in the manner of python-tuf's
``RepositorySimulator``: ``AppFetcher`` is a client ``Fetcher`` that hands each
request to a Flask app's test client, and ``TamperFetcher`` runs the attacks of
``tamper_proxy`` (``attack(request) -> Answer``, ``request.forward()``) on the way,
so that one attack vocabulary serves the in-process and the end-to-end tests."""

from __future__ import annotations

from flask import Flask

from client.protocol.urls import split_url
from client.transport.fetcher import MAX_ERROR_BYTES, Fetcher, Request, Response
from client.transport.http11 import BodyTooLarge
from tamper_proxy import Answer, Request as AttackedRequest, Tampering, answer_headers


class AppFetcher(Fetcher):
    """Reaches ``app`` for URLs under ``base_url``'s origin; any other origin is
    refused, as an address where nothing listens would be. Like ``HTTPFetcher``,
    a body longer than ``max_length`` (an error body longer than
    ``MAX_ERROR_BYTES``) is a ``TransportError``."""

    def __init__(self, app: Flask, base_url: str):
        self.app = app
        self.origin = split_url(base_url)[:3]

    def _fetch(self, request: Request, max_length: int) -> Response:
        scheme, host, port, target = split_url(request.url)
        if (scheme, host, port) != self.origin:
            raise ConnectionRefusedError(f"no server at {request.url} in this test")
        answer = self.send(request.method, target, request.headers, request.body)
        limit = max_length if 200 <= answer.status < 300 else MAX_ERROR_BYTES
        if len(answer.body) > limit:
            raise BodyTooLarge(len(answer.body), limit)
        return Response(answer.status, {k.lower(): v for k, v in answer.headers.items()},
                        answer.body)

    def send(self, method: str, target: str, headers: dict[str, str],
             body: bytes | None) -> Answer:
        """The app's answer to one request (a fresh test client: sync threads share
        the fetcher)."""
        response = self.app.test_client().open(target, method=method, headers=headers,
                                               data=body)
        return Answer(response.status_code, answer_headers(response.headers),
                      response.get_data())


class TamperFetcher(Tampering, AppFetcher):
    """An ``AppFetcher`` whose answers come from the test's ``attack`` (honest while
    it is None); check ``errors`` after the client ran."""

    def __init__(self, app: Flask, base_url: str):
        Tampering.__init__(self)
        AppFetcher.__init__(self, app, base_url)

    def send(self, method: str, target: str, headers: dict[str, str],
             body: bytes | None) -> Answer:
        return self.answer(AttackedRequest(super().send, method, target, headers, body))


class FakeNotary(Fetcher):
    """A notary (§11.4) in front of another fetcher, for tests until (and besides)
    the real endpoint: a request under ``url`` is a key query, answered with
    ``document()`` (what the notary saw of the origin) signed by the notary's own
    key; any other request goes on to ``inner``. ``queries`` holds the bodies asked."""

    KEY_ID = "ed25519:notary"

    def __init__(self, inner: Fetcher, document, url: str = "https://notary.invalid",
                 name: str = "notary.invalid"):
        import nacl.signing

        self.inner, self.document, self.url, self.name = inner, document, url, name
        self.key = nacl.signing.SigningKey.generate()
        self.queries: list[dict] = []

    @property
    def notary(self):
        from client.protocol.keyquery import Notary

        return Notary(self.name, self.url, self.KEY_ID, bytes(self.key.verify_key))

    def cli_args(self) -> list[str]:
        """``keyclient notary add``'s arguments for this notary."""
        from client.protocol.encoding import b64encode

        return [self.name, self.url, self.KEY_ID, b64encode(bytes(self.key.verify_key))]

    def _fetch(self, request: Request, max_length: int) -> Response:
        import json

        from client.protocol.signedjson import sign_json

        if not request.url.startswith(self.url + "/"):
            return self.inner._fetch(request, max_length)
        assert request.method == "POST" and request.url == self.url + "/_matrix/key/v2/query"
        self.queries.append(json.loads(request.body))
        signed = sign_json(self.document(), self.name, self.KEY_ID, self.key)
        return Response(200, {"content-type": "application/json"},
                        json.dumps({"server_keys": [signed]}).encode())

"""``KeyserverAPI``'s JSON answers."""

import pytest

from client.protocol.errors import TransportError
from client.transport.api import KeyserverAPI
from client.transport.fetcher import Fetcher, Response


class OneBody(Fetcher):
    """Answers every request 200 with ``body``."""

    def __init__(self, body):
        self.body = body

    def _fetch(self, request, max_length):
        return Response(200, {"content-type": "application/json"}, self.body)


@pytest.mark.parametrize("call", [KeyserverAPI.capabilities, KeyserverAPI.fetch_head],
                         ids=["capabilities", "head"])
@pytest.mark.parametrize("body", [b"{", b"[" * 200_000], ids=["truncated", "nested"])
def test_an_answer_that_does_not_parse_is_not_json(call, body):
    with pytest.raises(TransportError, match="answer is not JSON|is not a keyserver"):
        call(KeyserverAPI("http://ks.test", OneBody(body)))


@pytest.mark.parametrize("body", [b"{", b"[" * 200_000], ids=["truncated", "nested"])
def test_a_bundle_that_does_not_parse_is_a_transport_error(body):
    with pytest.raises(TransportError, match="reply bundle 0 is malformed"):
        KeyserverAPI("http://ks.test", OneBody(body)).fetch_bundle(0, use_msgpack=False)

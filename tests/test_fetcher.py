"""The fetcher: errors become the protocol's exceptions; only 429 and 503 are retried."""

import json

import pytest

from client.protocol.errors import (InvalidMessage, ProtocolError, RateLimited, TransportError,
                                    Unavailable, Unreachable)
from client.transport.fetcher import Fetcher, Request, Response


def answer(status, errcode=None, headers=None):
    body = json.dumps({"errcode": errcode, "error": "why"}).encode() if errcode else b"{}"
    return Response(status, headers or {}, body)


class Canned(Fetcher):
    """Answers from a list, recording requests and waits instead of sleeping."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests, self.waits = [], []
        self.sleep = self.waits.append

    def _fetch(self, request, max_length):
        self.requests.append(request)
        result = self.answers.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


def get(fetcher):
    return fetcher.fetch(Request("GET", "http://ks.test/v1/x"), 1000)


def test_success_needs_one_request():
    fetcher = Canned(answer(200))
    assert get(fetcher).status == 200
    assert len(fetcher.requests) == 1 and fetcher.waits == []


@pytest.mark.parametrize("status, errcode", [(429, "RATE_LIMITED"), (503, "UNAVAILABLE")])
def test_busy_answers_are_retried_with_exponential_backoff(status, errcode):
    fetcher = Canned(answer(status, errcode), answer(status, errcode), answer(200))
    assert get(fetcher).status == 200
    assert fetcher.waits == [0.25, 0.5]


def test_retry_after_is_honoured_when_short():
    fetcher = Canned(answer(503, "UNAVAILABLE", {"retry-after": "1"}), answer(200))
    assert get(fetcher).status == 200
    assert fetcher.waits == [1.0]


@pytest.mark.parametrize("asked", ["\u00b2", "\u0663", "1.5", "-1", "",
                                   "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_a_retry_after_not_in_ascii_seconds_means_backoff(asked):
    """"\u00b2" and "\u0663" pass ``str.isdigit``; ``float`` refuses or reads them."""
    fetcher = Canned(answer(503, "UNAVAILABLE", {"retry-after": asked}), answer(200))
    assert get(fetcher).status == 200
    assert fetcher.waits == [0.25]


def test_a_long_retry_after_is_raised_at_once():
    fetcher = Canned(answer(429, "RATE_LIMITED", {"retry-after": "60"}))
    with pytest.raises(RateLimited) as caught:
        get(fetcher)
    assert caught.value.status == 429 and fetcher.waits == []


def test_retries_end():
    fetcher = Canned(*[answer(503, "UNAVAILABLE")] * 5)
    with pytest.raises(Unavailable):
        get(fetcher)
    assert len(fetcher.requests) == 5 and fetcher.waits == [0.25, 0.5, 1.0, 2.0]


@pytest.mark.parametrize("status, errcode", [(400, "INVALID_MESSAGE"), (500, "UNAVAILABLE"),
                                             (401, "TOKEN_SPENT")])
def test_other_errors_are_not_retried(status, errcode):
    fetcher = Canned(answer(status, errcode), answer(200))
    with pytest.raises(ProtocolError) as caught:
        get(fetcher)
    assert (caught.value.errcode, caught.value.status) == (errcode, status)
    assert len(fetcher.requests) == 1


@pytest.mark.parametrize("status", [201, 204, 299])
def test_every_2xx_is_a_success(status):
    assert get(Canned(answer(status))).status == status


@pytest.mark.parametrize("status", [101, 199, 300, 301, 302, 303, 304, 307, 308, 399])
def test_an_answer_outside_2xx_is_an_error_whose_outcome_is_unknown(status):
    """No redirect is followed and no final 1xx or 3xx taken for success; a write so
    answered may have happened (``refused`` is False, as after a 5xx), and it is not
    retried."""
    fetcher = Canned(answer(status, headers={"location": "http://elsewhere.test/"}),
                     answer(200))
    with pytest.raises(ProtocolError) as caught:
        get(fetcher)
    assert (caught.value.errcode, caught.value.status) == (f"HTTP_{status}", status)
    assert not caught.value.refused
    assert len(fetcher.requests) == 1


@pytest.mark.parametrize("status, refused", [(None, True), (400, True), (499, True),
                                             (302, False), (500, False), (101, False)])
def test_only_the_clients_own_errors_and_4xx_are_refusals(status, refused):
    assert ProtocolError("x", status=status).refused is refused


def test_errcode_becomes_its_class():
    with pytest.raises(InvalidMessage):
        get(Canned(answer(400, "INVALID_MESSAGE")))


def test_unknown_errcode_keeps_its_name():
    with pytest.raises(ProtocolError) as caught:
        get(Canned(answer(418, "TEAPOT")))
    assert caught.value.errcode == "TEAPOT"


def test_an_error_body_nested_too_deeply_keeps_the_status():
    with pytest.raises(ProtocolError) as caught:
        get(Canned(Response(400, {}, b"[" * 30_000)))
    assert (caught.value.errcode, caught.value.status) == ("HTTP_400", 400)


def test_transport_failures_are_not_retried():
    fetcher = Canned(ConnectionResetError("reset"), answer(200))
    with pytest.raises(TransportError, match="reset"):
        get(fetcher)
    assert len(fetcher.requests) == 1


# --- HTTPFetcher against a real socket server -------------------------------------

import http.server  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from client.transport.fetcher import HTTPFetcher  # noqa: E402


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive

    def do_GET(self):
        self.server.connections.add(self.client_address)
        if self.path == "/drip":
            return self._drip()
        size = int(self.path.rsplit("/", 1)[1])
        body = b"x" * size
        self.send_response(200 if size < 10_000 else 400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.server.close_after_each:
            self.close_connection = True

    def _drip(self):
        """A byte every 0.02 s of a 100-byte body, until the client hangs up."""
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.close_connection = True
        try:
            for _ in range(100):
                self.wfile.write(b"x")
                time.sleep(0.02)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.connections, server.close_after_each = set(), False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def fetch_size(fetcher, server, size, max_length=1000):
    url = f"http://127.0.0.1:{server.server_address[1]}/{size}"
    return fetcher.fetch(Request("GET", url), max_length)


@pytest.fixture
def fetcher():
    fetcher = HTTPFetcher(timeout=5)
    yield fetcher
    fetcher.close()


def test_keep_alive_reuses_one_connection(http_server, fetcher):
    assert [len(fetch_size(fetcher, http_server, n).body) for n in (1, 2, 3)] == [1, 2, 3]
    assert len(http_server.connections) == 1


def test_a_connection_closed_by_the_server_is_replaced(http_server, fetcher):
    http_server.close_after_each = True
    assert [len(fetch_size(fetcher, http_server, n).body) for n in (1, 2)] == [1, 2]
    assert len(http_server.connections) == 2


def test_an_answer_over_the_limit_is_a_transport_error(http_server, fetcher):
    with pytest.raises(TransportError, match="exceeds 10"):
        fetch_size(fetcher, http_server, 11, max_length=10)
    assert len(fetch_size(fetcher, http_server, 10, max_length=10).body) == 10


def test_an_answer_past_the_deadline_is_a_one_line_transport_error(http_server):
    fetcher = HTTPFetcher(timeout=1, deadline=0.3)
    url = f"http://127.0.0.1:{http_server.server_address[1]}/drip"
    with pytest.raises(TransportError) as caught:
        fetcher.fetch(Request("GET", url), 1000)
    origin = url.removesuffix("/drip")
    assert str(caught.value) == (f"{origin} did not answer in time: the server took more "
                                 "than 0.3 s to answer")


def test_unreachable_is_a_transport_error():
    with pytest.raises(Unreachable, match="^cannot reach http://127.0.0.1:9: connection "
                                          "refused — is the server running\\?$"):
        HTTPFetcher(timeout=2).fetch(Request("GET", "http://127.0.0.1:9/x"), 10)
    with pytest.raises(TransportError, match="scheme"):
        HTTPFetcher().fetch(Request("GET", "ftp://example.org/x"), 10)

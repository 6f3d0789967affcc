"""The in-process server of the tests (``simulator``): what the fetcher refuses like
``HTTPFetcher`` does, and attack errors kept apart from the client's detections."""

import pytest

from client.protocol.errors import ProtocolError, TransportError
from client.transport.api import KeyserverAPI
from client.transport.fetcher import Request
from conftest import APP_URL
from simulator import AppFetcher, TamperFetcher


def test_an_answer_over_the_limit_is_a_transport_error(app):
    fetcher = AppFetcher(app, APP_URL)
    size = len(fetcher.fetch(Request("GET", APP_URL + "/v1/capabilities"), 100_000).body)
    with pytest.raises(TransportError, match=f"exceeds {size - 1}"):
        fetcher.fetch(Request("GET", APP_URL + "/v1/capabilities"), size - 1)


def test_another_origin_is_refused(app):
    with pytest.raises(TransportError,
                       match="cannot reach http://127.0.0.1:9: connection refused"):
        AppFetcher(app, APP_URL).fetch(Request("GET", "http://127.0.0.1:9/v1/capabilities"),
                                       1000)


def test_an_attack_that_fails_is_recorded_not_taken_for_a_detection(app):
    fetcher = TamperFetcher(app, APP_URL)
    fetcher.attack = lambda request: request.forward().json()["no such member"]
    with pytest.raises(ProtocolError) as info:
        KeyserverAPI(APP_URL, fetcher).fetch_head()
    assert info.value.status == 500
    assert [type(error) for error in fetcher.errors] == [KeyError]
    assert fetcher.seen == [("GET", "/v1/hashchain/head")]

"""Request bodies at the HTTP edge (§1, §12): each endpoint's own limit, to the byte,
whether the body declares its length or comes chunked, under the global ceiling."""

import io
import json

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from keyserver import create_app
from keyserver.http.keyinits import OWNER_BODY_BYTES, add_body_bytes
from keyserver.http.tokens import issue_body_bytes
from keyserver.http.users import UID_BODY_BYTES

FLUSH_PATH = "/v1/keyinits/" + "A" * 43 + "/flush"
STATUS_PATH = "/v1/keyinits/" + "A" * 43 + "/status"

#: method, path, the default configuration's limit, the answer to a body of exactly
#: the limit (an empty object: refused for what it holds, not for its size).
ENDPOINTS = [
    ("PUT", "/v1/users/alice@example.org", UID_BODY_BYTES, 400, "INVALID_MESSAGE"),
    ("POST", "/v1/keyinits", add_body_bytes(50), 400, "INVALID_MESSAGE"),
    ("POST", FLUSH_PATH, OWNER_BODY_BYTES, 404, "NOT_FOUND"),
    ("POST", STATUS_PATH, OWNER_BODY_BYTES, 404, "NOT_FOUND"),
    ("POST", "/v1/tokens/issue", issue_body_bytes(100), 400, "INVALID_MESSAGE"),
]


def body_of(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    return b"{" + b" " * (size - 2) + b"}"


def send(app, method: str, path: str, body: bytes, chunked: bool) -> tuple[int, str]:
    """The status and errcode of ``body`` sent with a Content-Length or, for
    ``chunked``, without one, as a server that decodes chunked coding passes it on
    (Flask's test client would add the length, so the app is called directly)."""
    environ = EnvironBuilder(path=path, method=method, input_stream=io.BytesIO(body),
                             content_type="application/json").get_environ()
    if chunked:
        del environ["CONTENT_LENGTH"]
        environ["wsgi.input_terminated"] = True
    answer, status, _ = run_wsgi_app(app, environ, buffered=True)
    return int(status.split()[0]), json.loads(b"".join(answer))["errcode"]


def test_the_limits_of_the_default_configuration():
    """Sized by the largest valid body: one UIDMessage (test_users builds the largest),
    50 KeyInits of 2 KiB, 100 blinded messages; all under the global 256 KiB."""
    assert [limit for _, _, limit, _, _ in ENDPOINTS] == [16384, 103424, 1024, 1024, 39424]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("method,path,limit,status,errcode", ENDPOINTS,
                         ids=["put-user", "add-keyinits", "flush", "status", "issue-tokens"])
def test_each_endpoint_takes_its_limit_to_the_byte(app, method, path, limit, status, errcode,
                                                   chunked):
    assert send(app, method, path, body_of(limit), chunked) == (status, errcode)
    assert send(app, method, path, body_of(limit + 1), chunked) == (413, "TOO_LARGE")
    # Read to one byte past the limit, never cut to a prefix that parses.
    assert send(app, method, path, body_of(limit) + b"GARBAGE", chunked) == (413, "TOO_LARGE")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_global_limit_caps_an_endpoint_limit(instance, chunked):
    """MAX_REQUEST_BYTES stays the ceiling: a KeyInit add, whose own limit is 101 KiB,
    takes no more than it."""
    limit = 16 * 1024
    app = create_app({"TESTING": True, "MAX_REQUEST_BYTES": limit}, instance_path=str(instance))
    assert send(app, "POST", "/v1/keyinits", body_of(limit), chunked) == (400, "INVALID_MESSAGE")
    assert send(app, "POST", "/v1/keyinits", body_of(limit + 1), chunked) == (413, "TOO_LARGE")


def test_a_larger_batch_allows_a_larger_body(instance):
    """The add's limit follows MAX_KEYINITS_PER_REQUEST."""
    app = create_app({"TESTING": True, "MAX_KEYINITS_PER_REQUEST": 60},
                     instance_path=str(instance))
    size = add_body_bytes(60)
    assert send(app, "POST", "/v1/keyinits", body_of(size), False) == (400, "INVALID_MESSAGE")
    assert send(app, "POST", "/v1/keyinits", body_of(size + 1), False) == (413, "TOO_LARGE")

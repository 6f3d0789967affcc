"""``GET /v1/uids/bundle/<B>`` (§5.1, §12): the replies of 256 positions at a time."""

import json

import msgpack
import pytest

from client.protocol.encoding import b64decode, b64url_encode
from client.protocol.wire import BUNDLE_SIZE, parse_reply_bundle
from keyserver.http.context import sign
from keyserver.loadgen import load
from keyserver.storage import db

#: Two complete bundles (0, 1) and the head's partial one (2: positions 512..599).
HEAD_POS = 2 * BUNDLE_SIZE + 87
MSGPACK = {"Accept": "application/msgpack"}


@pytest.fixture
def grown(app):
    """The instance with its chain ending at ``HEAD_POS``."""
    with app.app_context():
        load(db.get_db(), sign, HEAD_POS, "example.org", batch=300)
    return app


def test_a_complete_bundle_holds_its_256_replies_by_position(grown):
    response = grown.test_client().get("/v1/uids/bundle/1")
    assert response.status_code == 200 and response.mimetype == "application/json"
    bundle = parse_reply_bundle(response.data, response.mimetype, 1)
    assert [r.entry.hashchain_pos for r in bundle.replies] == \
        list(range(BUNDLE_SIZE, 2 * BUNDLE_SIZE))
    # Each is the reply FetchUID serves for its UIDIndex.
    reply = response.json["replies"][5]
    index = b64decode(reply["entry"]["uid_message_encrypted"])[:32]
    assert grown.test_client().get(f"/v1/uids/{b64url_encode(index)}").json == reply


def test_the_heads_bundle_is_short_and_not_cached(grown):
    response = grown.test_client().get("/v1/uids/bundle/2")
    bundle = parse_reply_bundle(response.data, response.mimetype, 2)
    assert bundle.replies[-1].entry.hashchain_pos == HEAD_POS
    assert len(bundle.replies) == HEAD_POS + 1 - 2 * BUNDLE_SIZE
    assert response.headers["Cache-Control"] == "no-cache" and "ETag" not in response.headers


def test_msgpack_carries_the_same_strings(grown):
    client = grown.test_client()
    as_json = client.get("/v1/uids/bundle/0")
    as_msgpack = client.get("/v1/uids/bundle/0", headers=MSGPACK)
    assert as_msgpack.mimetype == "application/msgpack"
    assert msgpack.unpackb(as_msgpack.data) == json.loads(as_json.data)
    assert parse_reply_bundle(as_msgpack.data, as_msgpack.mimetype, 0) == \
        parse_reply_bundle(as_json.data, as_json.mimetype, 0)


def test_a_complete_bundle_is_cacheable_with_etag(grown):
    client = grown.test_client()
    response = client.get("/v1/uids/bundle/0")
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "Accept" in response.headers["Vary"]
    etag = response.headers["ETag"]
    again = client.get("/v1/uids/bundle/0", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    other = client.get("/v1/uids/bundle/0", headers={**MSGPACK, "If-None-Match": etag})
    assert other.status_code == 200 and other.headers["ETag"] != etag
    assert client.get("/v1/uids/bundle/1").headers["ETag"] != etag


def test_beyond_the_heads_bundle_is_not_found(grown):
    response = grown.test_client().get("/v1/uids/bundle/3")
    assert response.status_code == 404 and response.json["errcode"] == "NOT_FOUND"


@pytest.mark.parametrize("bundle", ["-1", "01", "1.0", "x", "%201", "1e2", "99999999999999999"])
def test_a_bundle_number_off_the_integer_rule_is_bad_request(client, bundle):
    response = client.get(f"/v1/uids/bundle/{bundle}")
    assert response.status_code == 400 and response.json["errcode"] == "BAD_REQUEST"

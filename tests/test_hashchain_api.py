"""``GET /v1/hashchain`` and ``/v1/hashchain/head`` (§12)."""

import msgpack
import pytest

from client.trust.chainstate import ChainState
from client.protocol.wire import parse_chunk
from client.protocol.encoding import b64decode
from keyserver.http.context import sign
from keyserver.storage import db
from keyserver.loadgen import load


@pytest.fixture
def grown(app):
    """The instance with 24 entries (0..23)."""
    with app.app_context():
        load(db.get_db(), sign, 23, "example.org", batch=10)
    return app


def entries_of(response):
    if response.mimetype == "application/msgpack":
        return msgpack.unpackb(response.data)["entries"]
    return [b64decode(e) for e in response.json["entries"]]


@pytest.mark.parametrize("accept", ["application/json", "application/msgpack"])
def test_chunks_cover_the_chain_and_verify(grown, accept):
    client = grown.test_client()
    state = ChainState()
    for start in range(0, 24, 5):
        response = client.get(f"/v1/hashchain?start={start}&count=5", headers={"Accept": accept})
        assert response.status_code == 200 and response.mimetype == accept
        chunk = parse_chunk(response.data, response.mimetype)
        assert chunk.first_pos == start and chunk.head_pos == 23
        assert len(state.accept(chunk)) == min(5, 24 - start)
    assert state.length == 24


def test_default_start_and_count(grown):
    response = grown.test_client().get("/v1/hashchain")
    assert response.json["first_pos"] == 0 and len(response.json["entries"]) == 24


def test_both_encodings_carry_the_same_entries(grown):
    client = grown.test_client()
    as_json = client.get("/v1/hashchain?count=24")
    as_msgpack = client.get("/v1/hashchain?count=24", headers={"Accept": "application/msgpack"})
    assert entries_of(as_json) == entries_of(as_msgpack)
    assert all(isinstance(e, bytes) and len(e) == 153 for e in entries_of(as_msgpack))


def test_start_beyond_head_is_empty(grown):
    response = grown.test_client().get("/v1/hashchain?start=24")
    assert response.status_code == 200
    assert response.json == {"first_pos": 24, "head_pos": 23, "entries": []}


@pytest.mark.parametrize("query", [
    "start=-1", "start=01", "start=1.0", "start=x", "start=", "start=%2B1", "start=1%0A",
    "count=0", "count=10001", "count=-5", "count=1e3", "start=12345678901234567",
])
def test_bad_parameters_are_400(grown, query):
    response = grown.test_client().get(f"/v1/hashchain?{query}")
    assert response.status_code == 400
    assert response.json["errcode"] == "BAD_REQUEST"


def test_max_chunk_is_allowed(grown):
    response = grown.test_client().get("/v1/hashchain?count=10000")
    assert response.status_code == 200


def test_complete_chunk_is_cacheable_with_etag(grown):
    client = grown.test_client()
    response = client.get("/v1/hashchain?start=0&count=10")
    assert "immutable" in response.headers["Cache-Control"]
    assert "max-age=31536000" in response.headers["Cache-Control"]
    assert "Accept" in response.headers["Vary"]
    etag = response.headers["ETag"]
    again = client.get("/v1/hashchain?start=0&count=10", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    other = client.get("/v1/hashchain?start=0&count=10",
                       headers={"Accept": "application/msgpack", "If-None-Match": etag})
    assert other.status_code == 200 and other.headers["ETag"] != etag


def test_incomplete_chunk_is_not_cached(grown):
    response = grown.test_client().get("/v1/hashchain?start=20&count=10")
    assert response.headers["Cache-Control"] == "no-cache"
    assert "ETag" not in response.headers


def test_head(grown):
    client = grown.test_client()
    head = client.get("/v1/hashchain/head").json
    last = client.get("/v1/hashchain?start=23").json["entries"][0]
    assert head["pos"] == 23 and head["entry"] == last and isinstance(head["ts"], int)

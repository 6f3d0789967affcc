"""The notary (§11.4): other servers' key documents fetched from a real origin on
127.0.0.1, checked, cached in the database and served countersigned; every caching
rule at its time boundary; origins that fail, lie, stall or send too much; and a
Matrix homeserver's document, made with Matrix's own ``signedjson`` library."""

from __future__ import annotations

import fcntl
import http.server
import json
import os
import socket
import threading
import time

import pytest
import signedjson.key
import signedjson.sign

from client.protocol.serverkeys import parse_key_document
from keyserver import create_app
from keyserver.config import ConfigError
from keyserver.storage import db
from conftest import SERVER_NAME, at

HOUR_MS = 3600 * 1000
T0 = 1_900_000_000_000
ORIGIN = "matrix.test"
LIFETIME = 24 * HOUR_MS


class Origin:
    """A tiny HTTP origin on 127.0.0.1 serving ``/_matrix/key/v2/server`` as told:
    ``body`` (bytes), ``status``, ``delay`` (seconds before answering), or ``drip``
    (an answer whose header arrives a byte every 0.1 s, never ending)."""

    def __init__(self):
        self.body, self.status, self.delay, self.drip = b"{}", 200, 0.0, False
        self.hits = 0
        self.on_request = lambda: None
        self.release = threading.Event()
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                origin.hits += 1
                origin.on_request()
                assert self.path == "/_matrix/key/v2/server"
                if origin.drip:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    while not origin.release.wait(0.1):
                        self.wfile.write(b"X")
                        self.wfile.flush()
                    return
                origin.release.wait(origin.delay)
                self.send_response(origin.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(origin.body)))
                self.end_headers()
                self.wfile.write(origin.body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, document: dict) -> None:
        self.body, self.status = json.dumps(document).encode(), 200

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin():
    server = Origin()
    yield server
    server.stop()


class Homeserver:
    """A Matrix homeserver's keys, its documents made with ``signedjson`` exactly in
    Synapse's shape: ``server_name``, ``verify_keys``, ``old_verify_keys`` with
    ``expired_ts``, ``valid_until_ts``, ``signatures``."""

    def __init__(self, name: str = ORIGIN):
        self.name = name
        self.key = signedjson.key.generate_signing_key("a_Syn1")
        self.old = signedjson.key.generate_signing_key("a_0ld")

    def document(self, valid_until_ts: int, key=None) -> dict:
        key = key or self.key
        doc = {
            "server_name": self.name,
            "verify_keys": {f"ed25519:{key.version}": {
                "key": signedjson.key.encode_verify_key_base64(key.verify_key)}},
            "old_verify_keys": {f"ed25519:{self.old.version}": {
                "key": signedjson.key.encode_verify_key_base64(self.old.verify_key),
                "expired_ts": T0 - HOUR_MS}},
            "valid_until_ts": valid_until_ts,
        }
        return signedjson.sign.sign_json(doc, self.name, key)


@pytest.fixture
def homeserver():
    return Homeserver()


def notary_app(instance, origin, **config):
    return create_app({"TESTING": True, "NOTARY_ORIGINS": {ORIGIN: origin.url},
                       "NOTARY_FETCH_TIMEOUT": 1000, **config}, instance_path=str(instance))


@pytest.fixture
def notary(instance, origin):
    return notary_app(instance, origin).test_client()


def query(client, minimum: int | None = None, key_ids=()) -> list[dict]:
    """POST a query for the origin's keys; the documents of the answer."""
    keys = {key_id: ({} if minimum is None else {"minimum_valid_until_ts": minimum})
            for key_id in key_ids}
    response = client.post("/_matrix/key/v2/query", json={"server_keys": {ORIGIN: keys}})
    assert response.status_code == 200, response.json
    return response.json["server_keys"]


def valid_until(client, **kwargs) -> int | None:
    """The ``valid_until_ts`` of the one document served (None: none served)."""
    documents = query(client, **kwargs)
    assert len(documents) <= 1
    return documents[0]["valid_until_ts"] if documents else None


def verify_key(doc: dict, key_id: str):
    return signedjson.key.decode_verify_key_base64(
        "ed25519", key_id.split(":")[1], doc["verify_keys"][key_id]["key"])


def test_a_homeservers_document_is_served_countersigned_and_verifies_with_signedjson(
        notary, origin, homeserver):
    """Interoperability: a document made by Matrix's library is checked, cached and
    served with both signatures, each verifying with that library."""
    origin.serve(homeserver.document(T0 + LIFETIME))
    with at(T0):
        [doc] = query(notary)
        ours = notary.get("/_matrix/key/v2/server").json
    signedjson.sign.verify_signed_json(doc, ORIGIN, signedjson.key.get_verify_key(homeserver.key))
    [our_key_id] = ours["verify_keys"]
    signedjson.sign.verify_signed_json(doc, SERVER_NAME, verify_key(ours, our_key_id))
    assert set(doc["signatures"]) == {ORIGIN, SERVER_NAME}
    assert doc["old_verify_keys"] == homeserver.document(0)["old_verify_keys"]
    parse_key_document(doc, ORIGIN)
    with at(T0 + 1):
        response = notary.get(f"/_matrix/key/v2/query/{ORIGIN}")
    assert response.json["server_keys"] == [doc] and origin.hits == 1


def test_signatures_by_others_are_not_passed_on(notary, origin, homeserver):
    """A document arrives with a signature claiming to be the notary's: only the
    origin's signatures and the notary's own real one leave."""
    document = homeserver.document(T0 + LIFETIME)
    document["signatures"][SERVER_NAME] = {"ed25519:forged": "A" * 86}
    document["signatures"]["other.test"] = {"ed25519:x": "A" * 86}
    origin.serve(document)
    with at(T0):
        [doc] = query(notary)
        ours = notary.get("/_matrix/key/v2/server").json
    assert set(doc["signatures"]) == {ORIGIN, SERVER_NAME}
    assert set(doc["signatures"][SERVER_NAME]) == set(ours["verify_keys"])


def test_the_notary_answers_for_itself_with_its_own_document(notary, origin):
    with at(T0):
        response = notary.post("/_matrix/key/v2/query", json={"server_keys": {SERVER_NAME: {}}})
        own = notary.get("/_matrix/key/v2/server").json
    assert response.json == {"server_keys": [own]} and origin.hits == 0


def test_a_cached_document_is_served_until_half_its_lifetime(notary, origin, homeserver):
    origin.serve(homeserver.document(T0 + LIFETIME))
    with at(T0):
        assert valid_until(notary) == T0 + LIFETIME
    origin.serve(homeserver.document(T0 + 2 * LIFETIME))
    with at(T0 + LIFETIME // 2 - 1):
        assert valid_until(notary) == T0 + LIFETIME          # a cache hit
    assert origin.hits == 1
    with at(T0 + LIFETIME // 2):
        assert valid_until(notary) == T0 + 2 * LIFETIME      # half of its lifetime: asked
    assert origin.hits == 2


def test_minimum_valid_until_ts_forces_a_refetch(notary, origin, homeserver):
    origin.serve(homeserver.document(T0 + LIFETIME))
    with at(T0):
        query(notary)
    origin.serve(homeserver.document(T0 + 2 * LIFETIME))
    with at(T0 + 60_000):
        key_ids = ["ed25519:a_Syn1"]
        assert valid_until(notary, minimum=T0 + LIFETIME, key_ids=key_ids) == T0 + LIFETIME
        assert origin.hits == 1                              # it satisfies the minimum
        assert valid_until(notary, minimum=T0 + LIFETIME + 1, key_ids=key_ids) \
            == T0 + 2 * LIFETIME
        assert origin.hits == 2
    with at(T0 + 60_001):
        response = notary.get(f"/_matrix/key/v2/query/{ORIGIN}"
                              f"?minimum_valid_until_ts={T0 + 2 * LIFETIME}")
    assert response.json["server_keys"][0]["valid_until_ts"] == T0 + 2 * LIFETIME
    assert origin.hits == 2


def test_a_key_id_the_cached_document_lacks_forces_a_refetch(notary, origin, homeserver):
    origin.serve(homeserver.document(T0 + LIFETIME))
    with at(T0):
        query(notary)
    with at(T0 + 60_000):
        query(notary, key_ids=["ed25519:a_Syn1", "ed25519:a_0ld"])    # current and old: held
        assert origin.hits == 1
        new = signedjson.key.generate_signing_key("a_new")
        origin.serve(homeserver.document(T0 + LIFETIME, key=new))
        [doc] = query(notary, key_ids=["ed25519:a_new"])
    assert list(doc["verify_keys"]) == ["ed25519:a_new"] and origin.hits == 2


def test_an_origin_is_asked_at_most_once_per_min_refetch(notary, origin, homeserver):
    """A document already expired when fetched is never fresh: every query would ask,
    and NOTARY_MIN_REFETCH (60 s) holds them back."""
    origin.serve(homeserver.document(T0 - 1))
    with at(T0):
        query(notary)
        query(notary)
    with at(T0 + 59_999):
        query(notary, key_ids=["ed25519:unknown"])
    assert origin.hits == 1
    with at(T0 + 60_000):
        assert valid_until(notary) == T0 - 1
    assert origin.hits == 2


def test_the_refetch_limit_is_shared_by_every_worker(instance, origin, homeserver):
    """Two apps on one instance (two gunicorn workers) share the limit: it is in the
    database."""
    first, second = (notary_app(instance, origin).test_client() for _ in range(2))
    origin.serve(homeserver.document(T0 - 1))
    with at(T0):
        query(first)
    with at(T0 + 30_000):
        assert valid_until(second) == T0 - 1          # served from the shared cache
    assert origin.hits == 1
    with at(T0 + 60_000):
        query(second)
    assert origin.hits == 2


@pytest.mark.parametrize("failure", ["down", "500", "not json", "unsigned", "forged",
                                     "other server", "slow"])
def test_a_failing_origin_leaves_the_last_document_served_even_expired(
        instance, origin, homeserver, failure):
    notary = notary_app(instance, origin, NOTARY_FETCH_TIMEOUT=300).test_client()
    origin.serve(homeserver.document(T0 + LIFETIME))
    with at(T0):
        [first] = query(notary)
    bad = homeserver.document(T0 + 2 * LIFETIME)
    if failure == "down":
        origin.stop()
    elif failure == "500":
        origin.status = 500
    elif failure == "not json":
        origin.body = b"<html>"
    elif failure == "unsigned":
        del bad["signatures"]
        origin.serve(bad)
    elif failure == "forged":
        bad["valid_until_ts"] += 1                   # the signature no longer covers it
        origin.serve(bad)
    elif failure == "other server":
        origin.serve(Homeserver("other.test").document(T0 + 2 * LIFETIME))
    elif failure == "slow":
        origin.serve(bad)
        origin.delay = 5.0
    with at(T0 + 2 * LIFETIME):                      # past half-life, and expired
        [doc] = query(notary)
    assert doc == first and doc["valid_until_ts"] == T0 + LIFETIME


@pytest.mark.parametrize("failure", ["unsigned", "forged", "no verify_keys"])
def test_a_document_not_signed_by_its_origin_is_never_cached_nor_served(
        notary, origin, homeserver, instance, failure):
    bad = homeserver.document(T0 + LIFETIME)
    if failure == "unsigned":
        del bad["signatures"]
    elif failure == "forged":
        bad["verify_keys"]["ed25519:a_Syn1"]["key"] = \
            signedjson.key.encode_verify_key_base64(homeserver.old.verify_key)
    else:
        bad["verify_keys"] = {}
    origin.serve(bad)
    with at(T0):
        assert query(notary) == []
    database = db.connect(str(instance / "keyserver.sqlite"))
    try:
        assert database.conn.execute("SELECT document FROM notary_documents").fetchall() \
            == [(None,)]
    finally:
        database.close()


def test_an_oversized_document_is_refused_and_not_cached(notary, origin, homeserver):
    document = homeserver.document(T0 + LIFETIME)
    document["padding"] = "x" * (64 * 1024)          # signed, but over the limit
    document = signedjson.sign.sign_json({k: v for k, v in document.items()
                                          if k != "signatures"}, ORIGIN, homeserver.key)
    origin.serve(document)
    with at(T0):
        assert query(notary) == []
    origin.serve(homeserver.document(T0 + LIFETIME))
    with at(T0 + 60_000):
        assert valid_until(notary) == T0 + LIFETIME


def test_an_origin_sending_without_end_is_cut_at_its_size(instance, homeserver):
    """An answer without Content-Length that never ends: read up to the limit, then
    dropped, long before the time budget."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def flood():
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        try:
            while not stop.is_set():
                conn.sendall(b"[" * 65536)
        except OSError:
            pass                                      # the notary hung up, as it should
        conn.close()

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    app = create_app({"TESTING": True, "NOTARY_ORIGINS": {ORIGIN: f"http://127.0.0.1:{port}"},
                      "NOTARY_FETCH_TIMEOUT": 10_000}, instance_path=str(instance))
    started = time.monotonic()
    try:
        assert query(app.test_client()) == []
        assert time.monotonic() - started < 5
    finally:
        stop.set()
        listener.close()
        thread.join(5)


@pytest.mark.parametrize("kind", ["slow", "drip"])
def test_a_slow_origin_holds_a_request_no_longer_than_the_budget(instance, origin,
                                                                 homeserver, kind):
    """An origin that waits before answering, or sends its header a byte at a time (each
    read within any per-read timeout): the request ends at NOTARY_FETCH_TIMEOUT."""
    notary = notary_app(instance, origin, NOTARY_FETCH_TIMEOUT=500).test_client()
    origin.serve(homeserver.document(T0 + LIFETIME))
    origin.delay, origin.drip = (30.0, False) if kind == "slow" else (0.0, True)
    started = time.monotonic()
    assert query(notary) == []
    assert time.monotonic() - started < 2.0
    assert origin.hits == 1


def test_the_origin_is_asked_outside_the_write_lock(notary, origin, homeserver, instance):
    """While the notary waits for an origin, writers are not held up: the lock is free."""
    held = []

    def try_lock():
        fd = os.open(f"{instance / 'keyserver.sqlite'}.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)

    origin.on_request = try_lock
    origin.serve(homeserver.document(T0 + LIFETIME))
    with at(T0):
        query(notary)
    assert held == [False]


def test_one_request_spends_the_budget_once_for_all_its_origins(instance, homeserver):
    """Two slow origins in one query: the second gets what time the first left."""
    slow = [Origin(), Origin()]
    try:
        for server in slow:
            server.serve(homeserver.document(T0 + LIFETIME))
            server.delay = 30.0
        app = create_app({"TESTING": True, "NOTARY_FETCH_TIMEOUT": 600, "NOTARY_ORIGINS": {
            "a.test": slow[0].url, "b.test": slow[1].url}}, instance_path=str(instance))
        started = time.monotonic()
        response = app.test_client().post("/_matrix/key/v2/query", json={
            "server_keys": {"a.test": {}, "b.test": {}}})
        assert response.json == {"server_keys": []}
        assert time.monotonic() - started < 1.2
    finally:
        for server in slow:
            server.stop()


def test_the_notary_answers_only_for_its_origins_and_itself(notary, origin):
    for response in (notary.get("/_matrix/key/v2/query/elsewhere.test"),
                     notary.post("/_matrix/key/v2/query", json={"server_keys": {
                         ORIGIN: {}, "elsewhere.test": {}}})):
        assert response.status_code == 403
        assert response.json["errcode"] == "DOMAIN_NOT_SERVED"
    assert origin.hits == 0                          # refused before anything is asked


def test_an_origin_that_never_answered_gives_an_empty_list(notary, origin):
    origin.status = 404
    with at(T0):
        assert notary.get(f"/_matrix/key/v2/query/{ORIGIN}").json == {"server_keys": []}


@pytest.mark.parametrize("body, errcode", [
    (b"not json", "BAD_REQUEST"),
    (b'{"server_keys": {}, "server_keys": {}}', "BAD_REQUEST"),
    (b"{}", "INVALID_MESSAGE"),
    (b'{"server_keys": []}', "INVALID_MESSAGE"),
    (b'{"server_keys": {}, "more": 1}', "INVALID_MESSAGE"),
    (b'{"server_keys": {"Not A Name": {}}}', "INVALID_MESSAGE"),
    (b'{"server_keys": {"matrix.test": []}}', "INVALID_MESSAGE"),
    (b'{"server_keys": {"matrix.test": {"rsa:1": {}}}}', "INVALID_MESSAGE"),
    (b'{"server_keys": {"matrix.test": {"ed25519:a": []}}}', "INVALID_MESSAGE"),
    (b'{"server_keys": {"matrix.test": {"ed25519:a": {"other": 1}}}}', "INVALID_MESSAGE"),
    (b'{"server_keys": {"matrix.test": {"ed25519:a": {"minimum_valid_until_ts": 1.5}}}}',
     "INVALID_MESSAGE"),
    (b'{"server_keys": {"matrix.test": {"ed25519:a": {"minimum_valid_until_ts": -1}}}}',
     "INVALID_MESSAGE"),
    (b'{"server_keys": {"matrix.test": {"ed25519:a": {"minimum_valid_until_ts": true}}}}',
     "INVALID_MESSAGE"),
])
def test_bad_queries_are_refused_with_400(notary, origin, body, errcode):
    response = notary.post("/_matrix/key/v2/query", data=body,
                           content_type="application/json")
    assert (response.status_code, response.json["errcode"]) == (400, errcode)
    assert origin.hits == 0


def test_an_oversized_query_is_refused(notary):
    body = json.dumps({"server_keys": {ORIGIN: {f"ed25519:k{i}": {} for i in range(2000)}}})
    response = notary.post("/_matrix/key/v2/query", data=body, content_type="application/json")
    assert (response.status_code, response.json["errcode"]) == (413, "TOO_LARGE")


@pytest.mark.parametrize("path", ["/_matrix/key/v2/query/NOT_A_NAME",
                                  "/_matrix/key/v2/query/matrix.test:8448",
                                  "/_matrix/key/v2/query/matrix.test?minimum_valid_until_ts=-1",
                                  "/_matrix/key/v2/query/matrix.test?minimum_valid_until_ts=x"])
def test_bad_paths_are_refused_with_400(notary, path):
    response = notary.get(path)
    assert (response.status_code, response.json["errcode"]) == (400, "BAD_REQUEST")


@pytest.mark.parametrize("origins", [["matrix.test"], {"Matrix.Test": None},
                                     {"matrix.test": "ftp://x"}, {"matrix.test": 5}])
def test_bad_notary_origins_stop_the_server(instance, origins):
    with pytest.raises(ConfigError, match="NOTARY_ORIGINS"):
        create_app({"NOTARY_ORIGINS": origins}, instance_path=str(instance))


def test_an_origin_without_url_is_asked_over_https(instance):
    app = create_app({"NOTARY_ORIGINS": {"matrix.test": None, "b.test": "http://b:8/x/"}},
                     instance_path=str(instance))
    from keyserver.http.context import POLICY

    assert dict(app.extensions[POLICY].notary.origins) == {
        "matrix.test": "https://matrix.test/_matrix/key/v2/server",
        "b.test": "http://b:8/x/_matrix/key/v2/server"}


def test_a_document_another_worker_fetched_is_served_by_every_worker_at_once(
        instance, origin, homeserver):
    """Each worker keeps the rows it read while the database is unchanged; another
    worker's refetch is a commit, so the first serves the new document next."""
    first, second = (notary_app(instance, origin).test_client() for _ in range(2))
    origin.serve(homeserver.document(T0 + LIFETIME))
    with at(T0):
        assert valid_until(first) == T0 + LIFETIME
    origin.serve(homeserver.document(T0 + 2 * LIFETIME))
    with at(T0 + 60_000):
        assert valid_until(first) == T0 + LIFETIME                     # kept in the process
        assert valid_until(second, minimum=T0 + LIFETIME + 1, key_ids=["ed25519:a_Syn1"]) \
            == T0 + 2 * LIFETIME
        assert valid_until(first) == T0 + 2 * LIFETIME
    assert origin.hits == 2

"""KeyInits against real server processes (§9): every non-fallback KeyInit is handed
out exactly once, whoever asks at the same moment; a sender contacts only the
repositories the identity's keyserver vouches for."""

import contextlib
import json
import socketserver
import sqlite3
import threading

import nacl.bindings
import nacl.signing
import pytest
import requests

from client.protocol.encoding import b64decode, b64url_encode, canonical_json

from client.clock import now_ms
from client.protocol.keyinit import build_keyinit, build_session_anchor, sigkeyhash
from client.protocol.keys import X25519, KeyEntry, ed25519_entry
from client.protocol.uidmessage import build_uid_content, sign_uid_content
from conftest import (DAY_MS, WORKERS, GunicornServer, LiveServer, init_live_instance,
                      keyclient, run_together)

FETCHERS = 50
EPHEMERAL = 20
ANCHOR = build_session_anchor([KeyEntry(X25519, nacl.bindings.crypto_scalarmult_base(
    bytes(range(2, 34))))])


def register(server, identity, repouris=()):
    sigkey = nacl.signing.SigningKey.generate()
    now = now_ms()
    head = b64decode(requests.get(server.url + "/v1/hashchain/head").json()["entry"])[:32]
    content = build_uid_content(identity, ed25519_entry(sigkey), msgcount=0, not_before_ts=now,
                                not_after_ts=now + 30 * DAY_MS, lastentry=head,
                                repouris=repouris)
    response = requests.put(f"{server.url}/v1/users/{identity}",
                            json={"uid_message": sign_uid_content(content, sigkey)},
                            headers={"Authorization": server.mint(1)[0]})
    assert response.status_code == 201, response.text
    return sigkey


def race(url, key_hash, fetchers=FETCHERS):
    """POST FetchKeyInit from every fetcher at once (a thread and a connection each)."""

    def connect(index):
        session = requests.Session()
        session.get(url + "/v1/hashchain/head")         # connect before the race
        return session

    def fetch(index, session):
        with session:
            response = session.post(f"{url}/v1/keyinits/{b64url_encode(key_hash)}/fetch")
            return response.status_code, response.json()

    return run_together(fetchers, fetch, prepare=connect)


@pytest.fixture
def live_server(tmp_path, monkeypatch):
    """conftest's ``live_server`` without the fetch rate limits, for the races."""
    monkeypatch.setenv("KEYSERVER_KEYINIT_FETCH_RATE_PER_ADDRESS", "0")
    monkeypatch.setenv("KEYSERVER_KEYINIT_FETCH_RATE_PER_SIGKEYHASH", "0")
    path = tmp_path / "live"
    with LiveServer(path, init_live_instance(path)) as server:
        yield server


def add_keyinits(server, sigkey, items):
    response = requests.post(server.url + "/v1/keyinits",
                             json={"sigkey": ed25519_entry(sigkey).to_json(), "keyinits": items},
                             headers={"Authorization": server.mint(1)[0]})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("with_fallback", [True, False])
def test_racing_fetchers_never_share_a_keyinit(live_server, with_fallback):
    sigkey = register(live_server, "alice@example.org")
    now = now_ms()
    items = [build_keyinit(sigkey, msgcount=n, not_before_ts=now - 1000,
                           not_after_ts=now + DAY_MS + n, fallback=False,
                           repouri=live_server.url, anchor=ANCHOR)
             for n in range(1, EPHEMERAL + 1)]
    fallback = build_keyinit(sigkey, msgcount=EPHEMERAL + 1, not_before_ts=now - 1000,
                             not_after_ts=now + DAY_MS, fallback=True, repouri=live_server.url,
                             anchor=ANCHOR)
    response = requests.post(live_server.url + "/v1/keyinits",
                             json={"sigkey": ed25519_entry(sigkey).to_json(),
                                   "keyinits": items + ([fallback] if with_fallback else [])},
                             headers={"Authorization": live_server.mint(1)[0]})
    assert response.status_code == 200, response.text
    key_hash = sigkeyhash(bytes(sigkey.verify_key))

    answers = race(live_server.url, key_hash)

    handed = [canonical_json(body["keyinit"]) for status, body in answers if status == 200]
    ephemeral = sorted(k for k in handed if k != canonical_json(fallback))
    assert ephemeral == sorted(canonical_json(k) for k in items)        # each exactly once
    rest = [(status, body) for status, body in answers
            if status != 200 or canonical_json(body["keyinit"]) == canonical_json(fallback)]
    assert len(rest) == FETCHERS - EPHEMERAL
    if with_fallback:
        assert all(status == 200 for status, _ in rest), rest
    else:
        assert {(status, body["errcode"]) for status, body in rest} == {(404, "NO_KEYINIT")}
    with contextlib.closing(sqlite3.connect(live_server.instance / "keyserver.sqlite")) as conn:
        left = conn.execute("SELECT fallback, keyinit FROM keyinits WHERE sigkeyhash = ?",
                            (key_hash,)).fetchall()
    expected = [(1, canonical_json(fallback).decode())] if with_fallback else []
    assert left == expected


def test_the_fetch_limit_holds_across_worker_processes(tmp_path):
    """The attack that drained an identity in under a second: 40 fetches at once, spread
    over two gunicorn workers. The default 30 a minute per sigkeyhash holds in all, since
    the workers count in the one database, not each in its memory."""
    path = tmp_path / "instance"
    with GunicornServer(path, init_live_instance(path)) as server:
        sigkey = register(server, "alice@example.org")
        now = now_ms()
        add_keyinits(server, sigkey, [
            build_keyinit(sigkey, msgcount=n, not_before_ts=now - 1000,
                          not_after_ts=now + DAY_MS, fallback=False, repouri=server.url,
                          anchor=ANCHOR) for n in range(1, 41)])
        key_hash = sigkeyhash(bytes(sigkey.verify_key))
        answers = race(server.url, key_hash, 40)
        assert sorted(status for status, _ in answers) == [200] * 30 + [429] * 10, answers
        assert {body["errcode"] for status, body in answers if status == 429} == {"RATE_LIMITED"}
        fetch_path = f"/v1/keyinits/{b64url_encode(key_hash)}/fetch"
        assert len(server.workers_serving("POST", fetch_path)) == WORKERS
    with contextlib.closing(sqlite3.connect(path / "keyserver.sqlite")) as conn:
        left = conn.execute("SELECT count(*) FROM keyinits").fetchone()[0]
    assert left == 10


# --- Which repositories a sender contacts (§9, revision 2) ----------------------------

class Listener(socketserver.ThreadingTCPServer):
    """A plain HTTP listener on 127.0.0.1 standing for an internal address: it records
    each request line and answers 404 ``NO_KEYINIT``."""

    daemon_threads = True

    def __init__(self):
        self.requests: list[bytes] = []
        super().__init__(("127.0.0.1", 0), ListenerHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(10)


class ListenerHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.server.requests.append(self.rfile.readline())
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        body = json.dumps({"errcode": "NO_KEYINIT", "error": "nothing here"}).encode()
        self.wfile.write(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


def test_a_sender_skips_a_repository_the_keyserver_does_not_vouch_for(tmp_path, monkeypatch,
                                                                      listener):
    """Alice's UIDMessage lists the listener: a server that vouched for it then took
    it (``ALLOWED_REPOURIS``); the same server now no longer lists it in its signed
    capabilities. The real ``keyclient keyinit fetch`` must not contact it."""
    path = tmp_path / "live"
    port = init_live_instance(path)
    monkeypatch.setenv("KEYSERVER_ALLOWED_REPOURIS", json.dumps([listener.url]))
    with LiveServer(path, port) as vouching:
        register(vouching, "alice@example.org", repouris=[listener.url])
        control = tmp_path / "control"
        keyclient(control, "server", "add", vouching.url)
        result = keyclient(control, "keyinit", "fetch", "alice@example.org")
        assert result.exit_code == 1 and f"is available in {listener.url}" in result.output
        assert len(listener.requests) == 1 and b"/fetch" in listener.requests[0]   # reachable
    monkeypatch.delenv("KEYSERVER_ALLOWED_REPOURIS")
    with LiveServer(path, port) as server:
        bob = tmp_path / "bob"
        keyclient(bob, "server", "add", server.url)
        result = keyclient(bob, "keyinit", "fetch", "alice@example.org")
    assert result.exit_code == 1, result.output
    assert (f"none of alice@example.org's KeyInit repositories may be contacted: "
            f"{listener.url}: not a KeyInit repository example.org vouches for") in result.output
    assert len(listener.requests) == 1                                       # none since

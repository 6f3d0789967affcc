"""Races across worker PROCESSES: the app under gunicorn with two sync workers, as
README.md runs it in production. The workers share the database (WAL mode, writers
queued on the lock file's flock, one BEGIN IMMEDIATE transaction per write), so the
database still decides every race exactly once."""

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from conftest import (RACERS, WORKERS, GunicornServer, check_consistent, init_live_instance,
                      keyserver_command, new_message, race, registration, run_together)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("gunicorn") / "instance"
    with GunicornServer(path, init_live_instance(path)) as server:
        yield server
    assert server.process.returncode == 0, server.output()


def head_pos(server) -> int:
    return requests.get(server.url + "/v1/hashchain/head").json()["pos"]


def spent_count(server) -> int:
    with sqlite3.connect(server.instance / "keyserver.sqlite") as conn:
        count = conn.execute("SELECT count(*) FROM spent_tokens").fetchone()[0]
    conn.close()
    return count


def chunked_post(server, path: str, chunks: bytes) -> tuple[int, dict]:
    """POST a hand-framed chunked body; the status and the JSON answer. Sync workers
    close the connection after answering."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     .encode() + chunks)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@pytest.mark.parametrize("chunks", [b"zz\r\n{}\r\n0\r\n\r\n", b"-1\r\n{}\r\n0\r\n\r\n",
                                    b"2\r\n{}XX0\r\n\r\n", b"0\r\nbad trailer\r\n\r\n"])
def test_a_body_with_broken_chunked_framing_is_400(server, chunks):
    status, answer = chunked_post(server, "/v1/tokens/issue", chunks)
    assert (status, answer["errcode"]) == (400, "BAD_REQUEST"), answer
    assert "request body could not be read" in answer["error"]
    assert "Traceback" not in server.output()


def test_a_chunked_body_is_limited_like_a_declared_one(server):
    """No Content-Length: the endpoint's limit applies as the body is read, to the
    byte, and a body over it is refused whole rather than cut to a prefix that parses."""
    from keyserver.http.tokens import issue_body_bytes

    limit = issue_body_bytes(100)       # the default MAX_TOKENS_PER_ISSUE
    assert limit < requests.get(server.url + "/v1/capabilities").json()["limits"][
        "max_request_bytes"]
    start = b'{"voucher": "x"'
    exact = start + b" " * (limit - len(start) - 1) + b"}"
    status, answer = chunked_post(server, "/v1/tokens/issue",
                                  chunk(exact[:1000]) + chunk(exact[1000:]) + b"0\r\n\r\n")
    assert (status, answer["errcode"]) == (400, "INVALID_MESSAGE"), answer   # read whole
    status, answer = chunked_post(server, "/v1/tokens/issue",
                                  chunk(exact[:-1]) + chunk(b" }") + b"0\r\n\r\n")
    assert (status, answer["errcode"]) == (413, "TOO_LARGE"), answer
    status, answer = chunked_post(server, "/v1/tokens/issue",
                                  chunk(exact) + chunk(b"GARBAGE") + b"0\r\n\r\n")
    assert (status, answer["errcode"]) == (413, "TOO_LARGE"), answer


def test_racing_creates_across_workers_exactly_one_wins(server):
    before = head_pos(server)
    messages = [new_message(server.url, "alice@example.org")[0] for _ in range(RACERS)]
    answers = race(server, "alice@example.org", messages)
    statuses = sorted(status for status, _ in answers)
    assert statuses == [201] + [409] * (RACERS - 1), answers
    assert {body["errcode"] for status, body in answers if status == 409} == {"IDENTITY_TAKEN"}
    [winner] = [body for status, body in answers if status == 201]
    assert winner["entry"]["hashchain_pos"] == before + 1 == head_pos(server)
    check_consistent(server, "alice@example.org", [before + 1])   # chain verify included
    assert len(server.workers_serving("PUT", "/v1/users/alice@example.org")) == WORKERS


def test_one_token_raced_across_workers_pays_once(server):
    before, spent = head_pos(server), spent_count(server)
    [token] = server.mint(1)
    identities = [f"racer{letter}@example.org" for letter in "abcdefghiklmnopqrstuvwxyz"[:RACERS]]
    messages = [registration(server.url, identity) for identity in identities]

    def put(index):
        response = requests.put(f"{server.url}/v1/users/{identities[index]}",
                                json={"uid_message": messages[index]},
                                headers={"Authorization": token})
        return response.status_code, response.json()

    answers = run_together(RACERS, put)
    statuses = sorted((status, body.get("errcode")) for status, body in answers)
    assert statuses == [(201, None)] + [(401, "TOKEN_SPENT")] * (RACERS - 1), answers
    [winner] = [identities[i] for i, (status, _) in enumerate(answers) if status == 201]
    assert head_pos(server) == before + 1 and spent_count(server) == spent + 1
    check_consistent(server, winner, [before + 1])
    assert len(set().union(*(server.workers_serving("PUT", f"/v1/users/{identity}")
                             for identity in identities))) == WORKERS


def test_entry_times_never_decrease_across_workers(server):
    """§5: each worker reads the clock when a request begins, then waits for the write
    lock; an entry's time is max(now, the time of the entry before it), so an append
    whose request began earlier never carries an earlier time than the entry it
    follows."""
    before = head_pos(server)
    identities = [f"clock{letter}@example.org" for letter in "abcdefghiklmnopqrstuvwxyz"[:RACERS]]
    tokens = server.mint(RACERS)
    messages = [registration(server.url, identity) for identity in identities]

    def put(index):
        response = requests.put(f"{server.url}/v1/users/{identities[index]}",
                                json={"uid_message": messages[index]},
                                headers={"Authorization": tokens[index]})
        return response.status_code, response.json()

    answers = run_together(RACERS, put)
    assert sorted(status for status, _ in answers) == [201] * RACERS, answers
    with sqlite3.connect(server.instance / "keyserver.sqlite") as conn:
        rows = conn.execute("SELECT c.pos, c.ts, u.ts FROM chain c JOIN uids u ON u.pos = c.pos"
                            " WHERE c.pos > ? ORDER BY c.pos", (before,)).fetchall()
    conn.close()
    times = [chain_ts for _, chain_ts, _ in rows]
    assert len(rows) == RACERS and times == sorted(times), rows
    assert all(chain_ts == reply_ts for _, chain_ts, reply_ts in rows)
    replied = {body["entry"]["hashchain_pos"]: body["entry"]["ts"] for _, body in answers}
    assert replied == {pos: chain_ts for pos, chain_ts, _ in rows}


# --- The client against gthread workers, which keep connections alive ------------------

@pytest.fixture(scope="module")
def threaded_server(tmp_path_factory):
    path = tmp_path_factory.mktemp("gthread") / "instance"
    with GunicornServer(path, init_live_instance(path), threads=4) as server:
        yield server
    assert server.process.returncode == 0, server.output()


def test_the_client_reuses_a_kept_alive_connection(threaded_server):
    from client.transport.api import KeyserverAPI

    api = KeyserverAPI(threaded_server.url)
    try:
        api.capabilities()
        [connection] = api.fetcher._connections().values()
        sock = connection._sock
        assert connection.open                       # the server kept it alive
        for _ in range(5):
            assert api.fetch_head().pos >= 0
        assert connection._sock is sock              # ... and it served them all
    finally:
        api.fetcher.close()
    assert not connection.open


def test_keyclient_against_gthread_workers(threaded_server, tmp_path):
    """register, sync and lookup as processes, on kept-alive connections."""
    tokens = subprocess.run(
        keyserver_command("tokens", "mint", "-n", "1", "--instance",
                          str(threaded_server.instance)),
        check=True, capture_output=True, text=True).stdout.split()
    env = {**os.environ, "KEYCLIENT_HOME": str(tmp_path / "home"),
           "KEYCLIENT_PASSPHRASE": "correct horse"}
    script = str(Path(sys.executable).parent / "keyclient")
    for args in (["server", "add", threaded_server.url], ["tokens", "add", *tokens],
                 ["register", "carol@example.org", "--yes", "--escrow-out",
                  str(tmp_path / "paper.txt")],
                 ["sync"], ["lookup", "carol@example.org"]):
        done = subprocess.run([script, *args], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert "carol@example.org: current" in done.stdout

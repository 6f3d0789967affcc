"""The witness under gunicorn with two worker processes (§8.1): checking ``old`` and
storing the new checkpoint is one write transaction, so 30 logs' requests racing with
sizes 1..30 never roll the held size back, and the sizes the witness accepted form
one chain of transitions from 0 to 30. The workers, started together on an instance
without a witness key, make one key between them."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import threading
import urllib.parse

import requests

from client.protocol.checkpoint import parse_signature_lines
from client.protocol.cosignature import SIZE_CONTENT_TYPE, check_cosignature, parse_size
from client.protocol.wire import parse_capabilities
from conftest import (WORKERS, GunicornServer, init_live_instance, keyserver_command,
                      run_together, with_cosignatures)
from keyserver.service.signing import witness_key
from test_witness import LOG, ORIGIN, ROUTE, witness_logs

SIZES = range(1, 31)


def held_size(database: str) -> int:
    """The size the witness holds for the log, read as a reader (no write lock)."""
    uri = f"file:{urllib.parse.quote(database)}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        row = conn.execute("SELECT tree_size FROM witnessed_logs WHERE origin = ?",
                           (ORIGIN,)).fetchone()
    return 0 if row is None else row[0]


def test_racing_add_checkpoints_never_roll_the_held_size_back(tmp_path):
    path = tmp_path / "instance"
    port = init_live_instance(path)
    with open(path / "config.py", "a") as config:
        config.write(f"WITNESS_LOGS = {witness_logs(LOG)!r}\n")
    (path / "witness.key").unlink()      # an instance older than witnesses
    database = str(path / "keyserver.sqlite")
    observed: list[int] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            observed.append(held_size(database))

    with GunicornServer(path, port) as server:
        poller = threading.Thread(target=poll)
        poller.start()

        def send(index: int) -> list[tuple[int, int, int, str]]:
            """Ask for size ``SIZES[index]`` from the size this log believes the witness
            holds, learning it from each 409, while its size is still larger."""
            size, believed, answers = SIZES[index], 0, []
            while believed < size:
                response = requests.post(server.url + ROUTE, data=LOG.body(believed, size),
                                         timeout=60)
                answers.append((believed, size, response.status_code, response.text))
                if response.status_code != 409:
                    break
                assert response.headers["Content-Type"] == SIZE_CONTENT_TYPE
                believed = parse_size(response.content)
            return answers

        try:
            results = run_together(len(SIZES), send)
        finally:
            done.set()
            poller.join()
        vkey = parse_capabilities(requests.get(server.url + "/v1/capabilities",
                                               timeout=30).json()).witness
        served = server.workers_serving("POST", ROUTE)
    assert server.process.returncode == 0, server.output()

    answers = [answer for result in results for answer in result]
    assert {status for _, _, status, _ in answers} <= {200, 409}, answers
    accepted = sorted((old, size, text) for old, size, status, text in answers if status == 200)
    # Each 200 moved the held size from the old it named to a larger one; together they
    # are one chain 0 -> ... -> 30, so no two requests accepted from the same old size.
    assert [old for old, _, _ in accepted] == [0] + [size for _, size, _ in accepted][:-1]
    assert all(old < size for old, size, _ in accepted)
    assert accepted[-1][1] == 30 == held_size(database)
    assert observed == sorted(observed), observed
    # Every cosignature, whichever worker made it, verifies with the one published key.
    for _, size, text in accepted:
        note = with_cosignatures(LOG.note(size), parse_signature_lines(text))
        check_cosignature(note, vkey)
    assert len(served) == WORKERS
    # The workers that started together left one key file behind, the published key.
    assert vkey.pubkey == bytes(witness_key(str(path / "witness.key")).verify_key)
    assert not [name for name in os.listdir(path) if name.endswith(".tmp")]
    listing = subprocess.run(keyserver_command("witness", "list", "--instance", str(path)),
                             check=True, capture_output=True, text=True).stdout
    assert f"{ORIGIN}\n" in listing and "cosigned: size 30," in listing

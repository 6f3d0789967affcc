"""Witnessed checkpoints end to end (§8.1): three keyserver processes on 127.0.0.1 —
a log (example.org) and two keyservers that witness it — the log's real
``keyserver worker``, which asks both witnesses to cosign each checkpoint, and the
real keyclient trusting the log with a quorum of 2. Alice's entry, once both
witnesses cosigned it, is found; with one witness down the log keeps serving, the
client trusts the log only up to the last size both cosigned and says so, and once
the witness is back (its state kept) the worker catches it up with a consistency
proof and the newer entry is trusted too."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests

from client.protocol.checkpoint import parse_note
from client.protocol.note import format_verifier_key
from conftest import (LiveServer, free_port, init_live_instance, keyclient, keyserver_command,
                      registered_alice)
from keyserver.service import own
from keyserver.service.signing import read_log_key
from scripted_witness import ScriptedWitness

ORIGIN = "example.org/keyserver"
WITNESSES = ("w1.test", "w2.test")
#: How long the worker may take to have a checkpoint cosigned (it runs every 0.2 s).
COSIGNED_WITHIN_S = 60


def init_witness(path: Path, server_name: str, log_vkey: str) -> tuple[int, str]:
    """A keyserver instance that witnesses example.org's log; its port and verifier key."""
    port = free_port()
    subprocess.run(keyserver_command("init", "--instance", str(path), "--server-name",
                                     server_name, "--url", f"http://127.0.0.1:{port}"),
                   check=True, capture_output=True)
    with open(path / "config.py", "a") as config:
        config.write(f"WITNESS_LOGS = {{{ORIGIN!r}: [{log_vkey!r}]}}\n")
    printed = subprocess.run(keyserver_command("witness", "key", "--instance", str(path)),
                             check=True, capture_output=True, text=True).stdout.split()
    assert printed[0] == f"{server_name}/witness"
    return port, printed[1]


def quorum_size(log: LiveServer, quorum: int) -> int:
    """The tree size of the log's newest checkpoint with ``quorum`` cosignatures (0: none)."""
    answer = requests.get(f"{log.url}/v1/hashchain/checkpoint", params={"quorum": quorum},
                          timeout=5)
    return parse_note(answer.text).checkpoint.tree_size if answer.status_code == 200 else 0


def wait_until_cosigned(log: LiveServer, quorum: int, size: int) -> None:
    deadline = time.monotonic() + COSIGNED_WITHIN_S
    while quorum_size(log, quorum) < size:
        assert time.monotonic() < deadline, f"no checkpoint of size {size} with {quorum} " \
                                            "cosignatures"
        time.sleep(0.1)


def head_size(log: LiveServer) -> int:
    return requests.get(f"{log.url}/v1/hashchain/head", timeout=5).json()["pos"] + 1


def lookup(home: Path, identity: str):
    result = keyclient(home, "lookup", identity, "--json")
    return result, (json.loads(result.stdout) if result.stdout.startswith("{") else None)


@pytest.fixture
def network(tmp_path):
    """The log and its two witnesses serving, and the log's worker running."""
    log_path = tmp_path / "log"
    log_port = init_live_instance(log_path)
    log_vkey = format_verifier_key(own.log_verifier_key("example.org", read_log_key(
        str(log_path / "log.key"))))
    witnesses = {name: (tmp_path / name, *init_witness(tmp_path / name, name, log_vkey))
                 for name in WITNESSES}
    with open(log_path / "config.py", "a") as config:
        config.write("WITNESSES = %r\n" % {
            f"{name}/witness": {"url": f"http://127.0.0.1:{port}/witness", "vkey": vkey}
            for name, (_, port, vkey) in witnesses.items()})
        config.write("CHECKPOINT_INTERVAL = 200\nWITNESS_TIMEOUT = 2000\n"
                     "WITNESS_RETRY_MIN = 200\nWITNESS_RETRY_MAX = 1000\n")
    servers = {name: LiveServer(path, port) for name, (path, port, _) in witnesses.items()}
    log = LiveServer(log_path, log_port)
    worker_log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(keyserver_command("worker", "--instance", str(log_path)),
                              stdout=worker_log, stderr=subprocess.STDOUT)
    try:
        yield log, servers, {f"{name}/witness": vkey for name, (_, _, vkey) in witnesses.items()}
    finally:
        worker.terminate()
        worker.wait(10)
        worker_log.close()
        log.stop()
        for server in servers.values():
            server.stop()


def test_a_quorum_of_two_real_witnesses_and_one_going_down(network, tmp_path, cheap_keystore):
    log, servers, vkeys = network
    bob = tmp_path / "bob"
    assert keyclient(bob, "server", "add", log.url).exit_code == 0
    for name, vkey in vkeys.items():
        added = keyclient(bob, "witness", "add", name, vkey, "--server", "example.org")
        assert added.exit_code == 0, added.output
    assert keyclient(bob, "witness", "quorum", "2", "--server", "example.org").exit_code == 0

    alice_home = registered_alice(log, tmp_path / "alice-side")
    wait_until_cosigned(log, 2, head_size(log))
    result, found = lookup(bob, "alice@example.org")
    assert result.exit_code == 0, result.output
    assert found["status"] == "current"
    assert found["witnessed_size"] >= head_size(log)
    assert sorted(found["witnesses_relied_on"]) == sorted(vkeys)

    # One witness goes down: the log keeps serving and the other still cosigns.
    servers["w2.test"].stop()
    witnessed = quorum_size(log, 2)
    assert keyclient(alice_home, "tokens", "add", *[
        t.split('"')[1] for t in log.mint(1)]).exit_code == 0
    registered = keyclient(alice_home, "register", "carol@example.org", "--escrow-out",
                           str(tmp_path / "carol-escrow.txt"), "--yes")
    assert registered.exit_code == 0, registered.output
    size = head_size(log)
    wait_until_cosigned(log, 1, size)
    assert quorum_size(log, 2) == witnessed < size
    status = subprocess.run(keyserver_command("witness", "status", "--instance",
                                              str(log.instance)),
                            capture_output=True, text=True, check=True).stdout
    assert "w2.test/witness" in status and "w1.test/witness" in status

    result, found = lookup(bob, "carol@example.org")
    assert result.exit_code == 1
    assert "not yet" in result.output and f"up to size {witnessed}" in result.output
    result, found = lookup(bob, "alice@example.org")       # older entries: still trusted
    assert result.exit_code == 0 and found["status"] == "current"
    assert found["witnessed_size"] == witnessed

    # Back up, with the size it held: the worker sends it a proof from there.
    servers["w2.test"] = LiveServer(servers["w2.test"].instance, servers["w2.test"].port)
    wait_until_cosigned(log, 2, size)
    result, found = lookup(bob, "carol@example.org")
    assert result.exit_code == 0, result.output
    assert found["status"] == "current" and found["witnessed_size"] >= size


def test_a_hanging_witness_holds_back_neither_checkpoints_nor_the_other_witness(tmp_path):
    """The real worker loop, with one witness that never answers (within a timeout far
    longer than the test) and one that does: the good one cosigns checkpoint after
    checkpoint while the hanging one's first request is still open."""
    log_path = tmp_path / "log"
    init_live_instance(log_path)
    log_vkey = own.log_verifier_key("example.org", read_log_key(str(log_path / "log.key")))
    good, stuck = (ScriptedWitness(name, log_vkey) for name in ("good.test/witness",
                                                               "stuck.test/witness"))
    stuck.hang = True
    with open(log_path / "config.py", "a") as config:
        config.write(f"WITNESSES = {({w.name: w.config() for w in (good, stuck)})!r}\n"
                     "CHECKPOINT_INTERVAL = 200\nWITNESS_TIMEOUT = 60000\n")
    worker_log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(keyserver_command("worker", "--instance", str(log_path)),
                              stdout=worker_log, stderr=subprocess.STDOUT)
    try:
        for grown in range(1, 4):
            subprocess.run(keyserver_command("chain", "load", "-n", "1", "--instance",
                                             str(log_path)), check=True, capture_output=True)
            deadline = time.monotonic() + COSIGNED_WITHIN_S
            while good.size < 1 + grown:       # entry 0 and ``grown`` loaded entries
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                time.sleep(0.05)
        assert len(stuck.requests) == 1       # still waiting on its first answer
        assert good.errors == [] and stuck.errors == []
    finally:
        worker.terminate()
        worker.wait(10)
        worker_log.close()
        good.stop()
        stuck.stop()

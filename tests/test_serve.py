"""``scripts/serve``, the newcomer's first command: it makes a default instance on
first run, serves it on 127.0.0.1 with the background worker beside it (which signs
the first checkpoint), and leaves no process behind when stopped."""

import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def test_serve_makes_an_instance_and_runs_the_server_and_its_worker(tmp_path):
    port = free_port()
    instance = tmp_path / "instance"
    serve = subprocess.Popen([str(ROOT / "scripts" / "serve"), str(port)],
                             env={**os.environ, "KEYSERVER_INSTANCE": str(instance)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60       # bootstrap, init, start on a busy machine
        head = None
        while head is None and time.monotonic() < deadline:
            try:
                head = requests.get(url + "/v1/hashchain/head", timeout=1)
            except requests.ConnectionError:
                assert serve.poll() is None, serve.stdout.read()
                time.sleep(0.05)
        assert head is not None and head.status_code == 200 and head.json()["pos"] == 0
        assert (instance / "config.py").exists()
        # The worker beside it signs the first checkpoint (§8) once it has started.
        while requests.get(url + "/v1/hashchain/checkpoint", timeout=1).status_code != 200:
            assert time.monotonic() < deadline, "the worker made no checkpoint"
            time.sleep(0.1)
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    for pid in children(serve.pid)]
        assert any(b"worker" in command for command in commands), commands
        assert any(b"run" in command for command in commands), commands
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        output = serve.communicate(timeout=20)[0]
    assert f"keyclient server add http://127.0.0.1:{port}" in output
    assert "keyserver worker for localhost" in output
    assert children(serve.pid) == []

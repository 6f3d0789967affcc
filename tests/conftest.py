"""Shared fixtures: a fresh instance per test, the Flask ``app``/``client``/``runner``,
and ``live_server`` (a real ``keyserver run`` process on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from keyserver import create_app
from keyserver.instance import init_instance

VECTORS = Path(__file__).parent / "vectors"
SERVER_NAME = "example.org"


@pytest.fixture(scope="session")
def vectors() -> dict:
    """``shared/spec/vectors.json``, committed beside the tests."""
    return json.loads((VECTORS / "vectors.json").read_text(encoding="utf-8"))


@pytest.fixture
def instance(tmp_path) -> Path:
    path = tmp_path / "instance"
    init_instance(str(path), SERVER_NAME, "http://127.0.0.1:5000", [SERVER_NAME])
    return path


@pytest.fixture
def app(instance):
    return create_app({"TESTING": True}, instance_path=str(instance))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keyserver_command(*args: str) -> list[str]:
    """The installed ``keyserver`` console script, from the running interpreter's venv."""
    return [str(Path(sys.executable).parent / "keyserver"), *args]


class LiveServer:
    """A ``keyserver run`` process serving an instance on a free local port."""

    def __init__(self, instance: Path, port: int | None = None):
        self.instance = instance
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(instance.parent / f"server-{self.port}.log", "wb")
        self.process = subprocess.Popen(
            keyserver_command("run", "--instance", str(instance), "--port", str(self.port)),
            stdout=self.log, stderr=subprocess.STDOUT)
        self._wait()

    def _wait(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                requests.get(self.url + "/v1/hashchain/head", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        return (self.instance.parent / f"server-{self.port}.log").read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def live_server(tmp_path):
    """A real server process on 127.0.0.1 whose instance was made by ``keyserver init``."""
    path = tmp_path / "live"
    port = free_port()
    subprocess.run(
        keyserver_command("init", "--instance", str(path), "--server-name", SERVER_NAME,
                          "--url", f"http://127.0.0.1:{port}"),
        check=True, capture_output=True, env={**os.environ})
    server = LiveServer(path, port)
    yield server
    server.stop()

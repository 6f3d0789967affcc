"""kill -9 of a whole server during sustained writes, round after round on one
instance: shared by tests/test_e2e_crash.py and ``scripts/bench crash``.

Each round starts gunicorn (deploy/gunicorn.conf.py, two workers) on the instance in
its own process group, and writer threads register new identities, each paid with a
token of its own, recording every write the server acknowledged (201). Once enough
were acknowledged, the master and its workers all get SIGKILL at once, with writes in
flight. Before the next round starts the server again on the same instance, every
write acknowledged in any round so far must be in the database, and ``keyserver
chain verify`` must pass. A write whose answer never came (in flight at the kill) may
or may not be there: its client cannot know, and retries with a new token.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from slowclients import group_pids, leftover_processes, start_gunicorn, stop_group

#: Enough writes signed ahead that the writers are still busy when the kill comes.
SPARE_WRITES = 60


@dataclass(frozen=True)
class Round:
    acknowledged: int        # writes acknowledged (201) in this round
    in_flight: int           # writes sent whose answer never came: killed under them
    refused: list[str]       # answers other than 201 (none expected)
    lost: list[str]          # acknowledged writes of any round missing after this kill
    chain_length: int        # after the kill
    verified: bool           # ``keyserver chain verify`` passed
    verify_output: str


class CrashLoop:
    """Rounds of sustained writes ended by kill -9 on the instance at ``instance``,
    whose identities are in ``domain``; ``writers`` concurrent clients."""

    def __init__(self, bin_dir: Path, instance: Path, domain: str, writers: int = 4):
        self.bin_dir, self.instance, self.domain, self.writers = bin_dir, instance, domain, writers
        self.acknowledged: list[str] = []
        self._numbers = itertools.count()

    def _keyserver(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin_dir / "keyserver"), *args, "--instance",
                               str(self.instance)], capture_output=True, text=True)

    def _writes(self, url: str, count: int) -> list[tuple[str, str, str]]:
        """(identity, body, Authorization) of ``count`` new registrations."""
        from client.clock import now_ms
        from client.protocol.encoding import b64decode
        from keyserver.loadgen import build_registrations

        head = b64decode(requests.get(url + "/v1/hashchain/head", timeout=10).json()["entry"])
        first = next(self._numbers) * 100_000   # a block of numbers for each round
        messages = build_registrations(("crash", self.domain, first, count, head[:32], now_ms()))
        minted = self._keyserver("tokens", "mint", "-n", str(count))
        if minted.returncode != 0:
            raise RuntimeError(f"tokens mint: {minted.stderr}")
        return [(m["content"]["identity"], json.dumps({"uid_message": m}),
                 f'PrivateToken token="{token}"')
                for m, token in zip(messages, minted.stdout.split())]

    def round(self, writes_before_kill: int, log: Path) -> Round:
        """One round: serve, write, kill -9 once ``writes_before_kill`` writes were
        acknowledged, check. The server's output goes to ``log``."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = start_gunicorn(self.bin_dir, self.instance, port, True, log)
        url = f"http://127.0.0.1:{port}"
        try:
            pending = iter(self._writes(url, writes_before_kill + SPARE_WRITES))
            lock = threading.Lock()
            acknowledged: list[str] = []
            refused: list[str] = []
            in_flight = [0]

            def write() -> None:
                with requests.Session() as session:
                    while True:
                        with lock:
                            item = next(pending, None)
                        if item is None:
                            return
                        identity, body, token = item
                        try:
                            answer = session.put(f"{url}/v1/users/{identity}", data=body,
                                                 headers={"Authorization": token,
                                                          "Content-Type": "application/json"},
                                                 timeout=30)
                        except requests.RequestException:
                            with lock:
                                in_flight[0] += 1
                            return
                        with lock:
                            if answer.status_code == 201:
                                acknowledged.append(identity)
                            else:
                                refused.append(f"{answer.status_code} {answer.text[:200]}")

            threads = [threading.Thread(target=write) for _ in range(self.writers)]
            for thread in threads:
                thread.start()
            while len(acknowledged) < writes_before_kill and any(t.is_alive() for t in threads):
                time.sleep(0.002)
            pids = group_pids(server.pid)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
            for thread in threads:
                thread.join(60)
            deadline = time.monotonic() + 10
            while leftover_processes(pids):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"processes outlived kill -9: {leftover_processes(pids)}")
                time.sleep(0.01)
        except BaseException:
            stop_group(server)
            raise
        with lock:
            self.acknowledged += acknowledged
        verified = self._keyserver("chain", "verify")
        return Round(len(acknowledged), in_flight[0], refused, self._missing(),
                     self._chain_length(), verified.returncode == 0,
                     (verified.stdout + verified.stderr).strip())

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.instance / "keyserver.sqlite")

    def _missing(self) -> list[str]:
        conn = self._connect()
        try:
            present = {row[0] for row in conn.execute("SELECT identity FROM identities")}
        finally:
            conn.close()
        return [identity for identity in self.acknowledged if identity not in present]

    def _chain_length(self) -> int:
        conn = self._connect()
        try:
            return conn.execute("SELECT COALESCE(MAX(pos) + 1, 0) FROM chain").fetchone()[0]
        finally:
            conn.close()

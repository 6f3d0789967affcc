"""A full disk for real (issue 18): an instance on a small tmpfs of its own, a server
process writing to it until the file system is full, then space freed by deleting a
ballast file. Writes get 503 ``UNAVAILABLE`` with ``Retry-After`` while reads go on,
the chain verifies, the episode is logged once, and the same server (no restart)
takes writes again, many of them. Without a reserve the database meets the full disk
itself (SQLite's ENOSPC); with ``MIN_FREE_BYTES`` the server stops before it.
test_storage_faults.py injects the same fault at COMMIT; this is the real one."""

from __future__ import annotations

import os
import subprocess

import pytest
import requests

from conftest import LiveServer, init_live_instance, keyserver_command, registration
from keyserver.loadgen import synthetic_identity

MIB = 2**20
DISK = 12 * MIB
#: Free space left beside the ballast for the writes, above the reserve.
ROOM = MIB
#: Writes without a 503 after which the test gives up (about 40 KiB each: far more
#: than ROOM holds).
MAX_WRITES = 200
WRITES_AFTER = 20


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of DISK bytes mounted at tmp_path/live (this suite runs as root); the
    instance is made in it, the server's log beside it."""
    mount = tmp_path / "live"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0700", "tmpfs",
                    str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


class ReserveServer(LiveServer):
    reserve = 0

    def env(self):
        return {**super().env(), "KEYSERVER_MIN_FREE_BYTES": str(self.reserve),
                "KEYSERVER_DISK_CHECK_INTERVAL": "0"}


def free_bytes(path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


@pytest.mark.parametrize("reserve", [0, MIB], ids=["no reserve", "reserve"])
def test_a_full_tmpfs_is_503_until_space_is_freed_then_writes_go_on(small_disk, reserve):
    port = init_live_instance(small_disk)
    ReserveServer.reserve = reserve
    with ReserveServer(small_disk, port) as server:
        tokens = server.mint(MAX_WRITES + WRITES_AFTER + 1)
        ballast = small_disk / "ballast"
        with open(ballast, "wb") as handle:
            handle.write(b"\0" * (free_bytes(small_disk) - reserve - ROOM))

        def put(number: int) -> requests.Response:
            identity = synthetic_identity("w", number, "example.org")
            return requests.put(f"{server.url}/v1/users/{identity}",
                                json={"uid_message": registration(server.url, identity)},
                                headers={"Authorization": tokens[number]}, timeout=30)

        written = 0
        while (answer := put(written)).status_code == 201:
            written += 1
            assert written < MAX_WRITES, "the disk never filled"
        assert written > 0, answer.text
        assert answer.status_code == 503, answer.text
        assert answer.json()["errcode"] == "UNAVAILABLE"
        assert answer.headers["Retry-After"] == "60"
        # Reads go on, and nothing half-written: the chain verifies with every write.
        head = requests.get(server.url + "/v1/hashchain/head", timeout=30)
        assert head.status_code == 200 and head.json()["pos"] == written
        assert requests.get(server.url + "/v1/hashchain?start=0", timeout=30).status_code == 200
        # /readyz sees the reserve crossed, or without a reserve the disk full (a
        # write's BEGIN IMMEDIATE, all it tries, needs no space: it asks for room).
        ready = requests.get(server.url + "/readyz", timeout=30)
        assert ready.status_code == 503, ready.text
        assert ready.json()["disk"] == ("below the free-space reserve (MIN_FREE_BYTES)"
                                        if reserve else "disk full"), ready.text
        verified = subprocess.run(keyserver_command("chain", "verify", "--instance",
                                                    str(small_disk)),
                                  capture_output=True, text=True)
        assert verified.returncode == 0, verified.stderr
        assert f"chain OK: {written + 1} entries" in verified.stdout
        # Still full: refused again, with the same (unspent) token.
        assert put(written).status_code == 503

        ballast.unlink()   # the operator frees space; the server is not restarted
        for number in range(written, written + WRITES_AFTER):
            answer = put(number)
            assert answer.status_code == 201, (number, answer.text)
        assert requests.get(server.url + "/readyz", timeout=30).status_code == 200
        output = server.output()
    assert output.count("storage_fault kind=space") == 1, output
    # Which wall it met: SQLite's full disk, or the reserve before it.
    assert ("less than MIN_FREE_BYTES" if reserve else "database or disk is full") in output
    assert output.count("storage_recovered kind=space") == 1, output
    assert "Traceback" not in output
    verified = subprocess.run(keyserver_command("chain", "verify", "--instance",
                                                str(small_disk)), capture_output=True, text=True)
    assert f"chain OK: {written + WRITES_AFTER + 1} entries" in verified.stdout, verified

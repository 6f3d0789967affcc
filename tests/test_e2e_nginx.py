"""The production setup of deploy/ end to end: the real nginx (deploy/nginx.conf) in
front of a real gunicorn (deploy/gunicorn.conf.py, two workers) on 127.0.0.1, under 200
slow connections (slow headers, slow body, idle). Through nginx a probe's read and
write are answered within 1 s each; against gunicorn's sync workers alone the same
connections starve it. nginx missing is a failure, not a skip (.ci/run installs it)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import requests

from conftest import init_live_instance
from slowclients import (Nginx, SlowClients, group_pids, leftover_processes, nginx_binary,
                         probe_once, start_gunicorn, stop_group)
from conftest import free_port

BIN = Path(sys.executable).parent
SLOW = 200
PROBES = 3


def test_nginx_is_installed():
    assert nginx_binary()


def test_slow_clients_through_nginx_and_without(tmp_path):
    instance = tmp_path / "live"
    upstream = init_live_instance(instance)
    started: set[int] = set()
    gunicorn = nginx = None
    try:
        gunicorn = start_gunicorn(BIN, instance, upstream, True, tmp_path / "gunicorn.log",
                                  trusted_proxies=True)
        nginx = Nginx(tmp_path / "nginx", free_port(), upstream)
        started |= group_pids(gunicorn.pid) | group_pids(nginx.process.pid)
        assert probe_once(nginx.url, 5)[0][1] == 200        # the proxy works at all
        # A complete chunk is immutable: the second request is nginx's cached copy;
        # the head (no-cache) always reaches the server.
        chunk = [requests.get(nginx.url + "/v1/hashchain?start=0&count=1", timeout=5)
                 for _ in range(2)]
        assert [r.status_code for r in chunk] == [200, 200]
        assert "immutable" in chunk[0].headers["Cache-Control"]
        assert [r.headers["X-Cache-Status"] for r in chunk] == ["MISS", "HIT"]
        assert chunk[0].content == chunk[1].content
        head = requests.get(nginx.url + "/v1/hashchain/head", timeout=5)
        assert "X-Cache-Status" not in head.headers
        # nginx's request id reaches the server (which sends it back); bodies over
        # MAX_REQUEST_BYTES stop at nginx.
        assert len(head.headers["X-Request-Id"]) == 32
        big = requests.put(nginx.url + "/v1/users/big@example.org", data=b"x" * 300_000,
                           timeout=5)
        assert big.status_code == 413 and big.json()["errcode"] == "TOO_LARGE"

        # Through nginx: every probe request answered, within 1 s.
        with SlowClients(nginx.port, SLOW) as slow:
            time.sleep(1.5)                       # every slow connection is in place
            assert slow.open_count() == SLOW
            answers = [answer for _ in range(PROBES) for answer in probe_once(nginx.url, 2)]
        assert all(status is not None and seconds < 1.0 for _, status, seconds in answers), answers
        statuses = {what: status for what, status, _ in answers}
        assert statuses == {"GET head": 200, "PUT body": 400}, answers  # the app's answers
        errors = nginx.errors()
        stop_group(nginx.process)
        stop_group(gunicorn)
        assert "emerg" not in errors and "alert" not in errors, errors

        # gunicorn's sync workers alone: the same connections hold both workers, so
        # the probe gets nothing within 2 s.
        direct = free_port()
        gunicorn = start_gunicorn(BIN, instance, direct, False, tmp_path / "gunicorn-direct.log")
        started |= group_pids(gunicorn.pid)
        with SlowClients(direct, SLOW) as slow:
            time.sleep(1.5)
            starved = probe_once(f"http://127.0.0.1:{direct}", 2)
        assert all(status is None for _, status, _ in starved), starved
    finally:
        for process in (nginx.process if nginx else None, gunicorn):
            if process is not None:
                stop_group(process)
    assert leftover_processes(started) == []

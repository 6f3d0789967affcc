"""Slow clients against a server, nginx started from deploy/nginx.conf, and gunicorn
started from deploy/gunicorn.conf.py in its own process group: shared by
tests/test_e2e_nginx.py, tests/crashloop.py and ``scripts/bench slow``.

Everything listens on 127.0.0.1; nginx runs as this user with ``-p <folder>`` (its pid
file, logs, temporary files and cache inside the folder) and ``daemon off``, in its own
process group, so stopping it stops its workers too."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "nginx.conf"
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"


def nginx_binary() -> str:
    """nginx's path (Debian installs it in /usr/sbin, often not on a user's PATH);
    RuntimeError when it is not installed: a missing proxy fails, never skips."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError("nginx is not installed: apt-get install -y nginx-light "
                           "(.ci/run does)")
    return found


def site_config(port: int, upstream_port: int, folder: Path) -> str:
    """deploy/nginx.conf as a test runs it: listening on 127.0.0.1:``port``, proxying to
    127.0.0.1:``upstream_port``, its cache in ``folder``. Each replaced line must be in
    the template, so the test follows the file and fails when it changes shape."""
    text = TEMPLATE.read_text()
    for old, new in [("    listen 80;\n", f"    listen 127.0.0.1:{port};\n"),
                     ("    server 127.0.0.1:5000;\n", f"    server 127.0.0.1:{upstream_port};\n"),
                     ("proxy_cache_path /var/cache/nginx/keyserver ",
                      f"proxy_cache_path {folder / 'cache'} ")]:
        if text.count(old) != 1:
            raise AssertionError(f"deploy/nginx.conf no longer holds {old.strip()!r} once")
        text = text.replace(old, new)
    return text


def main_config(folder: Path, site: Path) -> str:
    """A whole nginx.conf around the site file, everything of nginx's in ``folder``."""
    # As root, nginx's workers would run as nobody, who cannot enter pytest's folders.
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""{user}daemon off;
worker_processes 1;
pid {folder / 'nginx.pid'};
error_log {folder / 'error.log'} warn;
events {{ worker_connections 4096; }}
http {{
    access_log {folder / 'access.log'};
{temp}
    include {site};
}}
"""


class Nginx:
    """nginx from deploy/nginx.conf on 127.0.0.1:``port`` in front of ``upstream_port``."""

    def __init__(self, folder: Path, port: int, upstream_port: int):
        self.folder, self.port = folder, port
        self.url = f"http://127.0.0.1:{port}"
        folder.mkdir(parents=True, exist_ok=True)
        site = folder / "keyserver.conf"
        site.write_text(site_config(port, upstream_port, folder))
        conf = folder / "nginx.conf"
        conf.write_text(main_config(folder, site))
        binary = nginx_binary()
        check = subprocess.run([binary, "-t", "-p", str(folder), "-e", str(folder / "error.log"),
                                "-c", str(conf)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
        self.process = subprocess.Popen(
            [binary, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_listening(port, self.process, lambda: self.errors())
        except BaseException:
            self.stop()
            raise

    def errors(self) -> str:
        log = self.folder / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def stop(self) -> None:
        stop_group(self.process)

    def __enter__(self) -> "Nginx":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def wait_listening(port: int, process: subprocess.Popen, output, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}: {output()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"not listening on {port} after {timeout} s: {output()}")


def stop_group(process: subprocess.Popen) -> None:
    """Stop a process started with ``start_new_session`` and everything of its group
    (gunicorn's or nginx's workers): TERM, then KILL after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if process.poll() is not None and not group_alive(process.pid):
                return
            time.sleep(0.05)
    process.wait(5)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def gunicorn_command(bin_dir: Path, port: int, workers: int = 2,
                     deploy_config: bool = True) -> list[str]:
    """gunicorn on 127.0.0.1:``port``: deploy/gunicorn.conf.py with ``workers`` workers,
    or (``deploy_config=False``) plain sync workers, gunicorn's defaults."""
    config = (["-c", str(GUNICORN_CONF)] if deploy_config
              else ["--no-control-socket", "--timeout", "30"])
    return [str(bin_dir / "gunicorn"), *config, "-w", str(workers), "-b", f"127.0.0.1:{port}",
            "keyserver:create_app()"]


def start_gunicorn(bin_dir: Path, instance: Path, port: int, deploy_config: bool, log: Path,
                   trusted_proxies: bool = False) -> subprocess.Popen:
    """gunicorn (``gunicorn_command``, two workers) serving ``instance`` in its own
    process group, its output in ``log``; returned once both workers booted and one
    answered. A start that fails stops the group."""
    env = {**os.environ, "KEYSERVER_INSTANCE": str(instance)}
    if trusted_proxies:
        env["KEYSERVER_TRUSTED_PROXIES"] = '["127.0.0.1"]'
    with open(log, "wb") as out:
        process = subprocess.Popen(gunicorn_command(bin_dir, port, 2, deploy_config), env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_listening(port, process, lambda: log.read_text(errors="replace"))
        deadline = time.monotonic() + 30
        while log.read_text(errors="replace").count("Booting worker") < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not boot: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        requests.get(f"http://127.0.0.1:{port}/v1/hashchain/head", timeout=10)
    except BaseException:
        stop_group(process)
        raise
    return process


SLOW_KINDS = ("headers", "body", "idle")


class SlowClients:
    """``count`` connections to 127.0.0.1:``port`` that never finish a request, a third
    of each kind: ``headers`` (a partial request line, then one more header byte a
    second), ``body`` (a whole PUT header with Content-Length: 10000, then one body byte
    a second) and ``idle`` (connect, send nothing). A connection the server closes is
    opened again at once, as an attacker would. One thread does it all."""

    def __init__(self, port: int, count: int = 200, interval: float = 1.0):
        self.port, self.count, self.interval = port, count, interval
        self.sockets: list[tuple[str, socket.socket | None]] = []
        self.reconnects = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, kind: str) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.setblocking(False)
            if kind == "headers":
                sock.send(b"GET /v1/hashchain/head HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            elif kind == "body":
                sock.send(b"PUT /v1/users/slow@example.org HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{")
            return sock
        except OSError:
            return None

    def _run(self) -> None:
        self.sockets = [(kind, self._open(kind))
                        for kind in (SLOW_KINDS[i % 3] for i in range(self.count))]
        self._ready.set()
        while not self._stop.wait(self.interval):
            for index, (kind, sock) in enumerate(self.sockets):
                if self._stop.is_set():
                    break
                alive = sock is not None
                if alive:
                    try:
                        if kind == "idle":
                            # Closed by the server? (recv of b"" or an error; else no data)
                            alive = sock.recv(4096) != b""
                        else:
                            sock.send(b"a")
                    except BlockingIOError:
                        pass
                    except OSError:
                        alive = False
                if not alive:
                    if sock is not None:
                        sock.close()
                    self.reconnects += 1
                    self.sockets[index] = (kind, self._open(kind))

    def open_count(self) -> int:
        return sum(sock is not None for _, sock in self.sockets)

    def __enter__(self) -> "SlowClients":
        self._thread.start()
        self._ready.wait(60)
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(30)
        for _, sock in self.sockets:
            if sock is not None:
                sock.close()


#: A probe: what a user does, a read and a write with a body (malformed on purpose:
#: the server's 400 shows the body reached it, without a token or a registration).
PROBE_BODY = b'{"uid_message": "not one"}'


def probe_once(url: str, timeout: float) -> list[tuple[str, int | None, float]]:
    """GET /v1/hashchain/head and a PUT with a body, each on a new connection:
    (what, status or None when not answered within ``timeout``, seconds)."""
    results = []
    for what, method, path, body in (
            ("GET head", "GET", "/v1/hashchain/head", None),
            ("PUT body", "PUT", "/v1/users/probe@example.org", PROBE_BODY)):
        start = time.monotonic()
        try:
            response = requests.request(method, url + path, data=body, timeout=timeout,
                                        headers={"Content-Type": "application/json",
                                                 "Connection": "close"})
            status = response.status_code
        except requests.RequestException:
            status = None
        results.append((what, status, time.monotonic() - start))
    return results


def leftover_processes(pids: set[int]) -> list[int]:
    """Which of ``pids`` still run (zombies aside)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def group_pids(pgid: int) -> set[int]:
    """The processes of process group ``pgid`` now."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                pids.add(int(entry.name))
    return pids

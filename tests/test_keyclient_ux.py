"""``keyclient`` as people use it (issue 17): one command at a time per home,
interrupts, errors that say what to do, offline lookups, output for scripts. The
races and signals run real ``keyclient`` processes."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from client.store.home import Home
from client.store.lock import HomeBusy, HomeLock
from conftest import (LiveServer, init_live_instance, keyclient, keyserver_command,
                      registered_alice)

KEYCLIENT = str(Path(sys.executable).parent / "keyclient")
#: Long enough for a sync of several chunks (10,000 entries each), so that signals
#: land inside it; loaded once for the module (about 15 s).
LONG_CHAIN = 12_000


def run_keyclient(home, *args, **kwargs) -> subprocess.Popen:
    """keyclient as a process; Python's fault handler on, so that a hung one can be
    made to show where it hangs (``hung``)."""
    env = {**kwargs.pop("env", os.environ), "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen([KEYCLIENT, "--home", str(home), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def hung(process: subprocess.Popen) -> None:
    """Fail with the stacks of every thread of a keyclient that did not end (SIGABRT
    makes the fault handler print them to stderr), making sure it is gone."""
    process.send_signal(signal.SIGABRT)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    pytest.fail(f"keyclient hung:\n{process.stderr.read()}")


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        hung(process)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def long_server(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "live"
    port = init_live_instance(path)
    subprocess.run(keyserver_command("chain", "load", "--instance", str(path),
                                     "-n", str(LONG_CHAIN)), check=True, capture_output=True)
    with LiveServer(path, port) as server:
        yield server


def verified(home) -> int:
    result = keyclient(home, "server", "list", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)[0]["verified_entries"]


# --- one command at a time ------------------------------------------------------------

def test_the_lock_waits_then_fails_naming_the_holder(tmp_path):
    holder = HomeLock(str(tmp_path))
    holder.acquire(1)
    told = []
    started = time.monotonic()
    with pytest.raises(HomeBusy, match=f"process {os.getpid()}.*after 0.2 s"):
        HomeLock(str(tmp_path)).acquire(0.2, waiting=told.append)
    assert time.monotonic() - started >= 0.2 and told == [str(os.getpid())]
    holder.release()
    again = HomeLock(str(tmp_path))
    again.acquire(0)
    again.release()


def test_a_second_command_waits_with_a_message_and_fails_clearly(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    holder = HomeLock(str(home))
    holder.acquire(1)
    try:
        result = keyclient(home, "--wait", "0.2", "server", "list")
    finally:
        holder.release()
    assert result.exit_code == 1
    assert "is using this home; waiting (up to 0.2 s)..." in result.output
    assert "try again when it has finished" in result.output
    assert "fork" not in result.output
    assert keyclient(home, "server", "list").exit_code == 0


def test_two_syncs_on_one_fresh_home_both_succeed(long_server, tmp_path):
    for attempt in range(10):
        home = tmp_path / f"home{attempt}"
        assert keyclient(home, "server", "add", long_server.url).exit_code == 0
        processes = [run_keyclient(home, "sync") for _ in range(2)]
        for process in processes:
            status, out, err = finish(process)
            assert status == 0, err
            assert "Traceback" not in err and "fork" not in err
        assert verified(home) == LONG_CHAIN + 1


def test_two_keyinit_publishes_on_one_home_both_succeed(live_server, tmp_path,
                                                        cheap_keystore):
    home = registered_alice(live_server, tmp_path, tokens=21)
    for _ in range(10):
        processes = [run_keyclient(home, "keyinit", "publish", "alice@example.org", "-n", "1")
                     for _ in range(2)]
        for process in processes:
            status, out, err = finish(process)
            assert status == 0, err
            assert "published 1 KeyInit(s)" in out
    result = keyclient(home, "keyinit", "status", "alice@example.org", "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["stored"] == 20 and status["fallback"] == 0
    assert status["identity"] == "alice@example.org" and status["server"] == "example.org"
    assert json.loads(keyclient(home, "tokens", "list", "--json").stdout)["example.org"][
        "available"] == 0


# --- interrupts -----------------------------------------------------------------------

@pytest.mark.parametrize("signum, delays, group", [
    (signal.SIGINT, [0.0, 0.2, 0.5, 0.8], True),      # Ctrl-C reaches every process
    (signal.SIGTERM, [0.1, 0.4], False),
    (signal.SIGHUP, [0.3], True),                     # the terminal closed
], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_during_sync_stops_it_cleanly(long_server, tmp_path, signum, delays, group):
    stopped = 0
    for n, delay in enumerate(delays):
        home = tmp_path / f"home{n}"
        assert keyclient(home, "server", "add", long_server.url).exit_code == 0
        process = run_keyclient(home, "sync", start_new_session=True)
        started(home, process)
        time.sleep(delay)
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        status, out, err = finish(process, timeout=20)
        assert "Traceback" not in err and "Exception" not in err, err
        # Stopped with one line; or done before the signal (or while exiting).
        assert status in (0, 128 + signum, -signum), (status, err)
        if status == 128 + signum:
            stopped += 1
            lines = [line for line in err.splitlines() if line.strip()]
            assert lines[-1].startswith("keyclient: stopped by ") and \
                "run the command again" in lines[-1]
        # The home is consistent and resumes: what verified is kept.
        kept = verified(home)
        assert 0 <= kept <= LONG_CHAIN + 1
        result = keyclient(home, "sync")
        assert result.exit_code == 0, result.output
        assert f"{LONG_CHAIN + 1 - kept} new entries, {LONG_CHAIN + 1} verified" in result.output
        assert not list((home / "chains").glob("*/entries.bin")) or \
            (home / "chains" / "example.org" / "entries.bin").stat().st_size == \
            (LONG_CHAIN + 1) * 153
    if len(delays) > 1:
        assert stopped, "no signal landed inside a sync"
    assert not processes_of(tmp_path)


def started(home: Path, process: subprocess.Popen) -> None:
    """Wait until the command runs: it holds the home's lock (its handlers are set)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if (home / "lock").read_text().strip() == str(process.pid):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    pytest.fail("keyclient did not start")


def processes_of(path: Path) -> list[str]:
    """Command lines of the running processes that name ``path`` (workers left behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if str(path) in cmdline:
            found.append(cmdline)
    return found


# --- errors in one line ---------------------------------------------------------------

class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<html><body><h1>404 Not Found</h1>" + b"x" * 2000 + b"</body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_errors_say_what_to_do_in_one_line(tmp_path):
    home = tmp_path / "home"
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{web.server_address[1]}"
        cases = {
            "127.0.0.1:5077": "Error: the URL must start with http:// or https:// "
                              "(not '127.0.0.1:5077')",
            "http://127.0.0.1:9": "Error: cannot reach http://127.0.0.1:9: connection refused"
                                  " — is the server running?",
            url: f"Error: {url} is not a keyserver (no signed capabilities at "
                 "/v1/capabilities: HTTP 404)",
            f"https://127.0.0.1:{web.server_address[1]}":
                f"Error: https://127.0.0.1:{web.server_address[1]} does not speak https: should"
                " the URL start with http://?",
        }
        for given, message in cases.items():
            result = keyclient(home, "server", "add", given)
            assert result.exit_code == 1
            assert result.output.strip() == message
    finally:
        web.shutdown()
        web.server_close()


# --- offline --------------------------------------------------------------------------

def test_offline_lookup_with_the_server_stopped(live_server, users_live, tmp_path):
    home = tmp_path / "home"
    keyclient(home, "server", "add", live_server.url)
    users_live.register("alice@example.org")
    online = keyclient(home, "lookup", "alice@example.org", "--json")
    assert online.exit_code == 0, online.output
    live_server.stop()

    result = keyclient(home, "lookup", "alice@example.org")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: cannot reach {live_server.url}: connection refused — is the server running?"
        " ('keyclient lookup alice@example.org --offline' uses what this home verified,"
        " synced just now)"]

    result = keyclient(home, "lookup", "alice@example.org", "--offline", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {**json.loads(online.stdout), "offline": True}
    assert "offline: example.org's chain as verified here, 2 entries, last synced just now" \
        in result.stderr
    text = keyclient(home, "lookup", "alice@example.org", "--offline")
    assert text.exit_code == 0 and "alice@example.org: current" in text.stdout
    missing = keyclient(home, "lookup", "bob@example.org", "--offline")
    assert missing.exit_code == 1 and "bob@example.org: not found" in missing.stdout

    result = keyclient(home, "verify")
    assert result.exit_code == 1 and "'keyclient verify --offline' uses" in result.output
    result = keyclient(home, "verify", "--offline", "--json")
    assert result.exit_code == 0, result.output
    [checked] = json.loads(result.stdout)
    assert checked["server"] == "example.org" and checked["verified_entries"] == 2


def test_offline_needs_a_verified_chain(live_server, tmp_path):
    home = tmp_path / "home"
    keyclient(home, "server", "add", live_server.url)
    result = keyclient(home, "lookup", "alice@example.org", "--offline")
    assert result.exit_code == 1 and "run 'keyclient sync'" in result.output


# --- scriptable -----------------------------------------------------------------------

def test_version_short_help_and_empty_listings(tmp_path):
    home = tmp_path / "home"
    assert keyclient(home, "--version").output.startswith("keyclient, version ")
    assert "Find and publish keys" in keyclient(home, "-h").output
    assert "--offline" in keyclient(home, "lookup", "-h").output
    assert keyclient(home, "server", "list").output.startswith("no servers yet")
    assert keyclient(home, "tokens", "list").output.startswith("no servers yet")
    assert json.loads(keyclient(home, "server", "list", "--json").stdout) == []
    assert json.loads(keyclient(home, "tokens", "list", "--json").stdout) == {}


def test_several_servers_a_default_and_remove(live_server, tmp_path):
    home = tmp_path / "home"
    keyclient(home, "server", "add", live_server.url)
    Home(str(home)).remember_server("other.org", "http://127.0.0.1:9", 0)

    result = keyclient(home, "lookup", "alice@example.org")
    assert result.exit_code == 1
    assert "several servers are known (example.org, other.org): name one with --server" \
        in result.output
    result = keyclient(home, "sync", "nope.org")
    assert "unknown server 'nope.org' (known: example.org, other.org)" in result.output

    assert keyclient(home, "server", "default", "example.org").exit_code == 0
    result = keyclient(home, "lookup", "alice@example.org", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"identity": "alice@example.org",
                                         "server": "example.org", "found": False,
                                         "entries_searched": 1, "not_yet_witnessed": [],
                                         "quorum": 0, "witnessed_size": None,
                                         "witnesses_relied_on": []}
    listed = json.loads(keyclient(home, "server", "list", "--json").stdout)
    assert [(s["name"], s["default"], s["verified_entries"]) for s in listed] == [
        ("example.org", True, 1), ("other.org", False, 0)]
    assert "(default)" in keyclient(home, "server", "list").output

    assert keyclient(home, "server", "remove", "example.org").output == "removed example.org\n"
    assert not (home / "chains" / "example.org").exists()
    assert json.loads(keyclient(home, "server", "list", "--json").stdout)[0]["name"] == \
        "other.org"
    assert keyclient(home, "server", "remove", "nope.org").exit_code == 1

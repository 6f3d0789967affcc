"""``keyclient register`` stopped by Ctrl-C or a closed terminal (issue 17), and the
passphrase asked without a terminal: real processes, real signals, one server
for the module."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import LiveServer, init_live_instance, keyclient
from test_keyclient_ux import finish, hung, run_keyclient, started

#: Identities registered by the module, one per case (the server is shared).
TOKENS = 40


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("signals") / "live"
    with LiveServer(path, init_live_instance(path)) as live:
        live.tokens = [t.split('"')[1] for t in live.mint(TOKENS)]
        yield live


def fresh_home(server, tmp_path: Path, name: str) -> Path:
    """A home that knows the server and holds one token."""
    home = tmp_path / name
    assert keyclient(home, "server", "add", server.url).exit_code == 0
    assert keyclient(home, "tokens", "add", server.tokens.pop()).exit_code == 0
    return home


class Output:
    """A process's standard output read as it comes, to wait for a prompt."""

    def __init__(self, process):
        self.text, self.process = "", process
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            chunk = self.process.stdout.read(1)
            if not chunk:
                return
            self.text += chunk

    def wait_for(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"never saw {needle!r}: {self.text!r}")
            time.sleep(0.01)


def key_files(home: Path) -> list[str]:
    keys = home / "keys"
    return sorted(p.name for p in keys.iterdir()) if keys.exists() else []


def stopped_cleanly(process, signum: int, out: Output | None = None) -> str:
    """The command ended with one line and 128 + the signal (or had finished first),
    no traceback; its stderr."""
    if out is None:
        status, _, err = finish(process, timeout=30)
    else:                              # the reader thread owns stdout
        try:
            status = process.wait(30)
        except subprocess.TimeoutExpired:
            hung(process)
        out.thread.join(10)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
        err = process.stderr.read()
        process.stderr.close()
    assert "Traceback" not in err and "Exception" not in err, err
    # Done before the signal, stopped with one line, or ended by it while exiting.
    assert status in (0, 128 + signum, -signum), (status, err)
    if status == 128 + signum:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines[-1].startswith("keyclient: stopped by "), err
    return err


def settles(home: Path, identity: str) -> None:
    """Run again, the registration completes (or is found complete), leaving exactly the
    signing key: no pending key, never the escrow key."""
    result = keyclient(home, "register", identity, "--yes")
    assert result.exit_code == 0 or "nothing more to do" in result.output, result.output
    assert key_files(home) == [f"{identity.replace('@', '_at_')}.sigkey.key"]


SIGNALS = [(signal.SIGINT, "sigint"), (signal.SIGHUP, "sighup")]


@pytest.mark.parametrize("signum, tag", SIGNALS, ids=[tag for _, tag in SIGNALS])
def test_a_signal_at_the_paper_prompt_keeps_no_key(server, tmp_path, monkeypatch, signum,
                                                   tag):
    """The terminal closes (or Ctrl-C) at "Is the escrow key backup saved?": both keys
    were only in memory, so nothing is left, and the next run starts afresh."""
    monkeypatch.setenv("KEYCLIENT_PASSPHRASE", "correct horse")
    identity = f"paper-{tag}@example.org"
    home = fresh_home(server, tmp_path, "home")
    process = run_keyclient(home, "register", identity, stdin=subprocess.PIPE,
                            start_new_session=True)
    out = Output(process)
    out.wait_for("Is the escrow key backup saved (on paper)?")
    assert "KEYCLIENT ESCROW KEY for " + identity in out.text
    os.killpg(process.pid, signum)
    err = stopped_cleanly(process, signum, out)
    assert "stopped by" in err
    assert key_files(home) == []
    assert "1 available" in keyclient(home, "tokens", "list").output   # nothing was paid
    settles(home, identity)


@pytest.mark.parametrize("signum, tag", SIGNALS, ids=[tag for _, tag in SIGNALS])
def test_a_signal_at_the_passphrase_prompt(server, tmp_path, monkeypatch, signum, tag):
    monkeypatch.delenv("KEYCLIENT_PASSPHRASE", raising=False)
    identity = f"prompt-{tag}@example.org"
    home = fresh_home(server, tmp_path, "home")
    process = run_keyclient(home, "register", identity, stdin=subprocess.PIPE,
                            start_new_session=True)
    out = Output(process)
    out.wait_for("Keystore passphrase")
    os.killpg(process.pid, signum)
    stopped_cleanly(process, signum, out)
    assert key_files(home) == []
    monkeypatch.setenv("KEYCLIENT_PASSPHRASE", "correct horse")
    settles(home, identity)


@pytest.mark.parametrize("signum, tag", SIGNALS, ids=[tag for _, tag in SIGNALS])
def test_a_signal_anywhere_in_a_registration_leaves_it_resumable(server, tmp_path,
                                                                monkeypatch, signum, tag):
    """Signals at several moments of ``register --yes`` (syncing, checking, sending,
    confirming on the chain): one line, no traceback; never the escrow key on disk;
    at most the pending signing key of a registration that was sent, which the next
    run settles from the chain."""
    monkeypatch.setenv("KEYCLIENT_PASSPHRASE", "correct horse")
    stopped = 0
    for n, delay in enumerate([0.0, 0.15, 0.3, 0.5, 0.8]):
        identity = f"moment-{tag}-{'abcdefgh'[n]}@example.org"
        home = fresh_home(server, tmp_path, f"home{n}")
        process = run_keyclient(home, "register", identity, "--yes", start_new_session=True)
        started(home, process)
        time.sleep(delay)
        os.killpg(process.pid, signum)
        stopped += "keyclient: stopped by " in stopped_cleanly(process, signum)
        keys = [name for name in key_files(home) if not name.startswith(".")]
        assert set(keys) <= {f"{identity.replace('@', '_at_')}.sigkey{suffix}.key"
                             for suffix in ("", ".next")}      # never the escrow key
        settles(home, identity)
    assert stopped, "no signal landed inside a registration"


def test_the_passphrase_without_a_terminal(server, tmp_path, monkeypatch):
    """No controlling terminal (a pipe, a service): no GetPassWarning and no "may be
    echoed" line; a too short passphrase for a new keystore is refused saying why,
    and the next try goes on."""
    monkeypatch.delenv("KEYCLIENT_PASSPHRASE", raising=False)
    home = fresh_home(server, tmp_path, "home")
    process = run_keyclient(home, "register", "piped@example.org", "--yes",
                            stdin=subprocess.PIPE, start_new_session=True)
    out, err = process.communicate("short\nshort\nlong enough\nlong enough\n", timeout=60)
    assert process.returncode == 0, err
    assert "GetPassWarning" not in err and "echoed" not in err
    assert ("a new keystore's passphrase needs at least 8 characters (it alone protects your"
            " keys on disk): try again (2 tries left)") in err
    assert "registered piped@example.org" in out

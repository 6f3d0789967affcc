"""The ``keyclient`` CLI against a real server: server add/list and sync, through
click's runner and as a subprocess."""

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from client.cli import main
from conftest import keyserver_command


def keyclient(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *args])


def test_server_add_list_and_sync(live_server, tmp_path):
    home = tmp_path / "home"
    result = keyclient(home, "server", "add", live_server.url)
    assert result.exit_code == 0 and "added example.org" in result.output
    subprocess.run(keyserver_command("chain", "load", "--instance", str(live_server.instance),
                                     "-n", "12"), check=True, capture_output=True)
    result = keyclient(home, "sync")
    assert result.exit_code == 0, result.output
    assert "example.org: 13 new entries, 13 verified" in result.output
    assert "13 entries verified" in keyclient(home, "server", "list").output
    assert "0 new entries" in keyclient(home, "sync", "example.org").output
    assert (home / "state.sqlite").stat().st_mode & 0o777 == 0o600
    assert home.stat().st_mode & 0o777 == 0o700


def test_errors_are_messages(live_server, tmp_path):
    home = tmp_path / "home"
    result = keyclient(home, "sync")
    assert result.exit_code == 1 and "keyclient server add URL" in result.output
    result = keyclient(home, "server", "add", "http://127.0.0.1:9")
    assert result.exit_code == 1 and "Error:" in result.output
    keyclient(home, "server", "add", live_server.url)
    result = keyclient(home, "sync", "other.org")
    assert result.exit_code == 1 and "unknown server" in result.output


def test_installed_script_and_home_from_environment(live_server, tmp_path):
    script = str(Path(sys.executable).parent / "keyclient")
    env = {"KEYCLIENT_HOME": str(tmp_path / "h"), "PATH": "/usr/bin:/bin"}
    added = subprocess.run([script, "server", "add", live_server.url], env=env,
                           capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    synced = subprocess.run([script, "sync"], env=env, capture_output=True, text=True)
    assert synced.returncode == 0 and "1 verified" in synced.stdout
    assert (tmp_path / "h" / "chains" / "example.org" / "entries.bin").stat().st_size == 153
    helped = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert "server" in helped.stdout and "sync" in helped.stdout


def test_lookup(live_server, users_live, tmp_path):
    home = tmp_path / "home"
    keyclient(home, "server", "add", live_server.url)
    reply = users_live.register("alice@example.org")
    result = keyclient(home, "lookup", "Alice@Example.org")
    assert result.exit_code == 0, result.output
    assert "alice@example.org: current" in result.output
    assert f"positions:  {reply['entry']['hashchain_pos']}" in result.output
    missing = keyclient(home, "lookup", "nobody@example.org")
    assert missing.exit_code == 1 and "not found on example.org" in missing.output
    bad = keyclient(home, "lookup", "not an identity")
    assert bad.exit_code == 1 and "Error:" in bad.output


def test_tokens_add_buy_list(live_server, tmp_path):
    home = tmp_path / "home"
    keyclient(home, "server", "add", live_server.url)
    minted = [line.split('"')[1] for line in live_server.mint(2)]
    result = keyclient(home, "tokens", "add", *minted)
    assert result.exit_code == 0 and "added 2 token(s)" in result.output
    [voucher] = subprocess.run(
        keyserver_command("vouchers", "create", "--tokens", "5", "--instance",
                          str(live_server.instance)),
        check=True, capture_output=True, text=True).stdout.split()
    result = keyclient(home, "tokens", "buy", voucher, "-n", "3")
    assert result.exit_code == 0 and "the voucher has 2 left" in result.output, result.output
    assert "example.org: 5 available" in keyclient(home, "tokens", "list").output
    refused = keyclient(home, "tokens", "buy", voucher, "-n", "3")
    assert refused.exit_code == 1 and "2 tokens left" in refused.output
    bad = keyclient(home, "tokens", "add", "not+base64url")
    assert bad.exit_code == 2 and "token" in bad.output
    assert (home / "wallet.sqlite").stat().st_mode & 0o777 == 0o600

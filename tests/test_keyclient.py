"""The ``keyclient`` CLI against a real server: server add/list and sync, through
click's runner and as a subprocess."""

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from client.cli import main
from conftest import a_day_later, keyclient, keyserver_command, registered_home


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
    assert bad.exit_code == 2 and "Invalid value for 'IDENTITY': 'not an identity': an " \
        "identity is localpart@domain with exactly one @" in bad.output     # says why


def test_tokens_add_buy_list(live_server, tmp_path):
    home = tmp_path / "home"
    keyclient(home, "server", "add", live_server.url)
    minted = [line.split('"')[1] for line in live_server.mint(2)]
    result = keyclient(home, "tokens", "add", *minted)
    assert result.exit_code == 0 and "added 2 token(s)" in result.output
    [voucher] = subprocess.run(
        keyserver_command("vouchers", "create", "--tokens", "5", "--instance",
                          str(live_server.instance)),
        check=True, capture_output=True, text=True).stdout.split()[:1]   # code, then label
    refused = keyclient(home, "tokens", "buy", voucher, "-n", "3")
    assert refused.exit_code == 1 and "listed on the chain less than 24 hours ago" \
        in refused.output, refused.output     # §10.4: nobody could have seen it yet
    with a_day_later():
        result = keyclient(home, "tokens", "buy", voucher, "-n", "3")
        assert result.exit_code == 0 and "the voucher has 2 left" in result.output, \
            result.output
        assert "example.org: 5 available" in keyclient(home, "tokens", "list").output
        refused = keyclient(home, "tokens", "buy", voucher, "-n", "3")
        # Typed as the escrow paper allows: 0 for O, 1 for I, 8 for B, any case.
        typo = voucher.replace("O", "0").replace("I", "1").replace("B", "8").lower()
        result = keyclient(home, "tokens", "buy", typo, "-n", "1")
        assert result.exit_code == 0 and "the voucher has 1 left" in result.output, \
            result.output
        unknown = keyclient(home, "tokens", "buy", "AAAA-BBBB")
        verbose = keyclient(home, "--verbose", "tokens", "buy", "AAAA-BBBB")
    assert refused.exit_code == 1 and "2 tokens left" in refused.output
    # Plain words and what to do; the request and errcode only with --verbose.
    assert unknown.exit_code == 1 and unknown.output.splitlines()[-1] == (
        "Error: the server refused: unknown voucher code — check the code (case, spaces, "
        "dashes, 0 for O and 1 for I do not matter) and how many tokens you ask for (-n), or"
        " ask whoever sold it")
    assert verbose.output.splitlines()[-1].endswith(
        f" [POST {live_server.url}/v1/tokens/issue: 403 VOUCHER_INVALID]")
    bad = keyclient(home, "tokens", "add", "not+base64url")
    assert bad.exit_code == 2 and "token" in bad.output
    assert (home / "wallet.sqlite").stat().st_mode & 0o777 == 0o600



def test_register_then_lookup(live_server, tmp_path, cheap_keystore):
    from client.store.paper import parse_paper_backup

    home = registered_home(live_server, tmp_path)
    paper = tmp_path / "escrow.txt"
    result = keyclient(home, "register", "alice@example.org", "--escrow-out", str(paper),
                       "--yes")
    assert result.exit_code == 0, result.output
    assert "registered alice@example.org on example.org at position 1" in result.output
    identity, escrow = parse_paper_backup(paper.read_text())
    assert identity == "alice@example.org"
    assert paper.stat().st_mode & 0o777 == 0o600
    names = sorted(p.name for p in (home / "keys").iterdir())
    assert names == ["alice_at_example.org.sigkey.key"]          # escrow key deleted
    looked = keyclient(home, "lookup", "alice@example.org")
    assert "current" in looked.output
    from client.protocol.encoding import b64encode
    assert f"sigescrow:  {b64encode(bytes(escrow.verify_key))}" in looked.output
    assert "0 available, 1 spent" in keyclient(home, "tokens", "list").output


def test_register_failures_change_nothing(live_server, tmp_path, cheap_keystore):
    home = registered_home(live_server, tmp_path, tokens=0)
    no_tokens = keyclient(home, "register", "alice@example.org", "--yes")
    assert no_tokens.exit_code == 1 and "no tokens for example.org left" in no_tokens.output
    assert not (home / "keys").exists() or not any((home / "keys").iterdir())
    keyclient(home, "tokens", "add", *[t.split('"')[1] for t in live_server.mint(1)])
    cancelled = CliRunner().invoke(main, ["--home", str(home), "register", "bob@example.org"],
                                   input="n\n")
    assert cancelled.exit_code == 1 and "cancelled" in cancelled.output
    assert not any((home / "keys").iterdir())
    assert "1 available" in keyclient(home, "tokens", "list").output
    assert keyclient(home, "register", "bob@example.org", "--yes").exit_code == 0
    other = tmp_path / "other"
    keyclient(other, "server", "add", live_server.url)
    keyclient(other, "tokens", "add", *[t.split('"')[1] for t in live_server.mint(1)])
    taken = keyclient(other, "register", "bob@example.org", "--yes")
    assert taken.exit_code == 1 and "already registered" in taken.output
    assert "1 available" in keyclient(other, "tokens", "list").output


def test_wrong_passphrase(live_server, tmp_path, cheap_keystore, monkeypatch):
    home = registered_home(live_server, tmp_path, tokens=2)
    assert keyclient(home, "register", "alice@example.org", "--yes").exit_code == 0
    monkeypatch.setenv("KEYCLIENT_PASSPHRASE", "wrong")
    result = keyclient(home, "register", "bob@example.org", "--yes")
    assert result.exit_code == 1 and "passphrase" in result.output.lower()


def test_lookup_of_expired_keys_says_so(live_server, tmp_path, users_live):
    from conftest import DAY_MS, at
    from client.clock import now_ms

    home = tmp_path / "home"
    keyclient(home, "server", "add", live_server.url)
    users_live.register("alice@example.org")          # valid for 30 days
    with at(now_ms() + 30 * DAY_MS + 1000):
        result = keyclient(home, "lookup", "alice@example.org")
    assert result.exit_code == 3
    assert "alice@example.org: EXPIRED: do not use these keys" in result.output
    with at(now_ms() - 60_000):
        early = keyclient(home, "lookup", "alice@example.org")
    assert early.exit_code == 3 and "NOT YET VALID" in early.output
    assert keyclient(home, "lookup", "alice@example.org").exit_code == 0


def test_lookup_light(live_server, users_live, tmp_path):
    """``lookup --light`` with the installed script: the latest entry with its proof in
    a checkpoint the worker signed, under the capabilities' log key before a sync and
    the chain's after; it says what it cannot prove."""
    script = str(Path(sys.executable).parent / "keyclient")
    env = {"KEYCLIENT_HOME": str(tmp_path / "h"), "PATH": "/usr/bin:/bin"}

    def run(*args):
        return subprocess.run([script, *args], env=env, capture_output=True, text=True)

    assert run("server", "add", live_server.url).returncode == 0
    reply = users_live.register("alice@example.org")
    early = run("lookup", "--light", "alice@example.org")
    assert early.returncode == 1 and "no checkpoint yet" in early.stderr
    subprocess.run(keyserver_command("worker", "--once", "--instance",
                                     str(live_server.instance)), check=True, capture_output=True)
    light = run("lookup", "--light", "alice@example.org")
    assert light.returncode == 0, light.stderr
    assert "alice@example.org: current (light: latest entry only)" in light.stdout
    assert f"position:   {reply['entry']['hashchain_pos']}, in the checkpoint of tree size 2" \
        in light.stdout
    assert "the log key the server's capabilities name" in light.stdout
    assert "the server learned that you looked up alice@example.org" in light.stderr
    assert "not that no later entry" in light.stderr
    chain = tmp_path / "h" / "chains" / "example.org" / "entries.bin"
    assert not chain.exists() or chain.stat().st_size == 0   # nothing downloaded
    assert run("sync").returncode == 0
    after = run("lookup", "--light", "alice@example.org", "--json")
    assert after.returncode == 0, after.stderr
    assert '"log_key_from": "chain"' in after.stdout
    assert run("lookup", "--light", "--offline", "alice@example.org").returncode == 2
    assert "no evidence" in run("evidence").stdout

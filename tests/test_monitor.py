"""Monitoring the user's own identities (§7.3 "Monitoring"): every sync (and
``verify``) alerts on an entry of them that this client did not make, loudly and
with exit status 4, until ``keyclient monitor ack``. The "hostile server" is
whoever else writes to the victim's identity: another device or a thief with the
sigkey, a holder of the escrow key, or the server itself forcing a takeover."""

import shutil

import pytest

from client.clock import now_ms
from client.protocol.encoding import sha256
from client.store.keystore import Keystore
from client.trust.monitor import fingerprint
from conftest import (DAY_MS, ServerUserActions, at, keyclient,
                      registered_alice, registered_home, serve_for_years)

ALICE = "alice@example.org"
YEAR_MS = 365 * DAY_MS
EXIT_ALERTS = 4


@pytest.fixture
def app_server(tmp_path, monkeypatch):
    """An in-process server whose keys outlive clocks moved years ahead (takeovers)."""
    return serve_for_years(monkeypatch, tmp_path / "app")


@pytest.fixture
def alice(app_server, tmp_path, cheap_keystore):
    """A home that registered alice (escrow backup in tmp_path/escrow.txt) and holds
    two more tokens."""
    return registered_alice(app_server, tmp_path)


def other_home(app_server, tmp_path, tokens: int, keys_of=None):
    """Another home with ``tokens``; with a copy of ``keys_of``'s keystore it is a
    second device of the same user (or a thief of its keys)."""
    home = registered_home(app_server, tmp_path / "other", tokens=tokens)
    if keys_of is not None:
        shutil.copytree(keys_of / "keys", home / "keys")
    return home


def sigkey_fingerprint(home) -> str:
    key = Keystore(str(home / "keys"), "correct horse").get_signing_key(
        "alice_at_example.org.sigkey")
    return fingerprint(bytes(key.verify_key))


def test_fingerprint_is_the_start_of_sha256_in_groups():
    digest = sha256(b"key").hex()
    assert fingerprint(b"key") == " ".join(digest[i:i + 4] for i in range(0, 16, 4))


def test_own_writes_never_alert(alice, tmp_path):
    for command in (["update", ALICE], ["recover", ALICE, "--escrow",
                                        str(tmp_path / "escrow.txt")]):
        result = keyclient(alice, *command)
        assert result.exit_code == 0, result.output
        assert "WARNING" not in result.output
    for command in (["sync"], ["verify"]):
        result = keyclient(alice, *command)
        assert result.exit_code == 0 and "WARNING" not in result.output, result.output
    assert keyclient(alice, "monitor", "list").output == "no alerts\n"


def test_a_second_device_alerts_until_each_entry_is_acknowledged(alice, app_server, tmp_path):
    device = other_home(app_server, tmp_path, tokens=2, keys_of=alice)
    keys = []
    for _ in range(2):
        assert keyclient(device, "update", ALICE).exit_code == 0
        keys.append(sigkey_fingerprint(device))
    result = keyclient(alice, "sync")
    assert result.exit_code == EXIT_ALERTS, result.output
    warnings = result.stderr.splitlines()
    assert [line for line in warnings if "WARNING" in line] == [
        f"WARNING: {ALICE} on example.org has an entry you did not make at position {pos}: "
        f"update, new signing key {key}. If you made it on another device: keyclient "
        f"monitor ack {ALICE} {pos} --server example.org"
        for pos, key in zip((2, 3), keys)]
    for command in (["verify"], ["lookup", ALICE]):
        result = keyclient(alice, *command)
        assert result.exit_code == EXIT_ALERTS, result.output
    assert f"fingerprint: {keys[1]}" in result.output      # lookup shows the new key's
    assert keyclient(alice, "monitor", "list").output.count("UNACKNOWLEDGED") == 2

    acked = keyclient(alice, "monitor", "ack", ALICE, "2")
    assert acked.exit_code == 0 and "position 2: update" in acked.output
    result = keyclient(alice, "sync")
    assert result.exit_code == EXIT_ALERTS
    assert "position 3" in result.stderr and "position 2" not in result.stderr
    assert keyclient(alice, "monitor", "ack", ALICE, "2").exit_code == 1   # done already
    assert keyclient(alice, "monitor", "ack", ALICE, "3").exit_code == 0
    for command in (["sync"], ["verify"]):
        result = keyclient(alice, *command)
        assert result.exit_code == 0 and "WARNING" not in result.output, result.output
    listed = keyclient(alice, "monitor", "list").output
    assert "UNACKNOWLEDGED" not in listed and listed.count("acknowledged") == 2


def test_a_recovery_by_the_escrow_key_alerts(alice, app_server, tmp_path):
    thief = other_home(app_server, tmp_path, tokens=1)
    result = keyclient(thief, "recover", ALICE, "--escrow", str(tmp_path / "escrow.txt"))
    assert result.exit_code == 0, result.output
    result = keyclient(alice, "sync")
    assert result.exit_code == EXIT_ALERTS
    assert f"position 2: recovery, new signing key {sigkey_fingerprint(thief)}" in result.stderr


def test_a_command_that_syncs_reports_the_alert(alice, app_server, tmp_path):
    """The command that finds the entry warns too, and a failing one keeps status 1."""
    thief = other_home(app_server, tmp_path, tokens=1, keys_of=alice)
    assert keyclient(thief, "update", ALICE).exit_code == 0
    result = keyclient(alice, "update", ALICE)
    assert result.exit_code == 1 and "not the one on the chain" in result.output
    assert "position 2: update" in result.stderr


@pytest.fixture
def taken_over(alice, app_server):
    """The server appends a new owner for alice@ (msgcount 0), dated three years
    ahead: past her not_after_ts plus the reclaim grace."""
    with at(now_ms() + 3 * YEAR_MS):
        ServerUserActions(app_server).register(ALICE)
    return alice


def test_a_takeover_dated_ahead_alerts_as_unverifiable(taken_over):
    """Her history no longer verifies (the takeover is judged at when she first saw
    it): the sync still succeeds for the chain, and warns."""
    for command in (["sync"], ["verify"]):
        result = keyclient(taken_over, *command)
        assert result.exit_code == EXIT_ALERTS, result.output
        assert "position 2: unverifiable, its history fails verification" in result.stderr


def test_a_takeover_seen_in_its_time_alerts_as_a_new_owner(taken_over):
    with at(now_ms() + 3 * YEAR_MS + 60_000):
        result = keyclient(taken_over, "sync")
    assert result.exit_code == EXIT_ALERTS, result.output
    assert "position 2: new owner, new signing key " in result.stderr

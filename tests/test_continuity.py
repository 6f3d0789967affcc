"""Key continuity for looked-up identities (a messenger's "safety number changed"):
the home remembers the message of each looked-up identity it last showed; the next
``lookup`` (or ``keyinit fetch``) that shows another names every entry since by its
kind (``update``, ``recovery``, ``new owner``), once, and a new owner makes the exit
status 5. The pure part is ``client.trust.continuity``; the contact's changes are
made by the contact's own ``keyclient`` (a second device, the escrow key) or by a
reclaim years on, against the in-process server, and through the installed
``keyclient`` script against a real server process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nacl.signing
import pytest

from client.clock import now_ms
from client.store.home import Home
from client.trust.continuity import KeyChange, Shown, changes_since, current, has_new_owner
from client.trust.history import verify_history
from client.trust.monitor import NEW_OWNER, UPDATE, fingerprint
from conftest import (DAY_MS, TEST_TOKEN_KEY_LIFETIME, ServerUserActions, at, keyclient,
                      registered_alice, serve_in_process)
from test_history import ANY_TIME, ALICE, SERVER, T0, match, server_record

YEAR_MS = 365 * DAY_MS
EXIT_NEW_OWNER = 5


# --- the pure part -------------------------------------------------------------------

def key_fingerprint(key: nacl.signing.SigningKey) -> str:
    return fingerprint(bytes(key.verify_key))


@pytest.fixture
def history():
    """alice created at position 1 and updated (by her previous key) at 4 and 6."""
    keys = [nacl.signing.SigningKey.generate() for _ in range(3)]
    matches = [match(1, ALICE, sigkey=keys[0]),
               match(4, ALICE, ts=T0 + 1, msgcount=1, sigkey=keys[1], previous=keys[0]),
               match(6, ALICE, ts=T0 + 2, msgcount=2, sigkey=keys[2], previous=keys[1])]
    result = verify_history(ALICE, SERVER, matches, server_record(), ANY_TIME)
    return result, [key_fingerprint(key) for key in keys]


def test_nothing_to_announce_on_the_first_lookup_or_without_change(history):
    result, fingerprints = history
    assert changes_since(None, result) == []
    assert current(result) == Shown(6, fingerprints[2])
    assert changes_since(current(result), result) == []


def test_every_entry_since_the_message_shown_is_a_change(history):
    result, (first, second, third) = history
    changes = changes_since(Shown(1, first), result)
    assert changes == [KeyChange(4, UPDATE, second, first), KeyChange(6, UPDATE, third, second)]
    assert not any(change.same_key for change in changes) and not has_new_owner(changes)
    assert changes_since(Shown(4, second), result) == [KeyChange(6, UPDATE, third, second)]


def test_a_message_shown_that_the_history_does_not_hold_compares_the_current_key(history):
    result, (_, _, third) = history
    assert changes_since(Shown(5, "0000 0000"), result) == [
        KeyChange(6, UPDATE, third, "0000 0000")]
    assert changes_since(Shown(4, third), result) == [KeyChange(6, UPDATE, third, third)]
    assert has_new_owner([KeyChange(6, NEW_OWNER, third, "x")])


def test_without_the_message_shown_the_current_one_is_announced_with_its_kind():
    # alice's name expired and was taken again at 6 by someone else; a home whose chain
    # was replaced remembers a message the history does not hold.
    keys = [nacl.signing.SigningKey.generate() for _ in range(3)]
    matches = [match(1, ALICE, sigkey=keys[0]),
               match(4, ALICE, ts=T0 + 1, msgcount=1, sigkey=keys[1], previous=keys[0]),
               match(6, ALICE, ts=T0 + 400 * DAY_MS, sigkey=keys[2])]
    result = verify_history(ALICE, SERVER, matches, server_record(), ANY_TIME)
    changes = changes_since(Shown(5, "0000 0000"), result)
    assert changes == [KeyChange(6, NEW_OWNER, key_fingerprint(keys[2]), "0000 0000")]
    assert has_new_owner(changes)


# --- keyclient against the in-process server -----------------------------------------

@pytest.fixture
def app_server(tmp_path, monkeypatch):
    """An in-process server whose token key still works years on (for reclaims)."""
    monkeypatch.setenv("KEYSERVER_TOKEN_KEY_LIFETIME", TEST_TOKEN_KEY_LIFETIME)
    return serve_in_process(monkeypatch, tmp_path / "app")


@pytest.fixture
def alice(app_server, tmp_path, cheap_keystore):
    """alice's own home (escrow backup in tmp_path/escrow.txt), four tokens left."""
    return registered_alice(app_server, tmp_path, tokens=5)


@pytest.fixture
def bob(app_server, tmp_path, alice):
    """A home that looked alice up once: no announcement then."""
    home = tmp_path / "bob"
    assert keyclient(home, "server", "add", app_server.url).exit_code == 0
    first = keyclient(home, "lookup", ALICE)
    assert first.exit_code == 0, first.output
    assert_silent(first)
    return home


def assert_silent(result) -> None:
    assert "NOTICE" not in result.output and "WARNING" not in result.output, result.output


def shown_fingerprint(result) -> str:
    """The signing key's fingerprint a lookup printed."""
    return re.search(r"fingerprint: ([0-9a-f ]+)\n", result.stdout).group(1)


def announced(result) -> list[str]:
    return [line for line in result.stderr.splitlines()
            if line.startswith(("NOTICE", "WARNING", "  position", "Check with"))]


def lookup_again_is_silent(home) -> None:
    again = keyclient(home, "lookup", ALICE)
    assert again.exit_code == 0, again.output
    assert_silent(again)


def test_an_unchanged_identity_is_not_announced(bob):
    lookup_again_is_silent(bob)
    assert Home(str(bob)).shown("example.org", ALICE).pos == 1


def test_an_update_is_announced_once(alice, bob):
    before = shown_fingerprint(keyclient(bob, "lookup", ALICE))
    assert keyclient(alice, "update", ALICE).exit_code == 0
    result = keyclient(bob, "lookup", ALICE)
    assert result.exit_code == 0, result.output                # informational
    new = shown_fingerprint(result)
    assert new != before
    assert announced(result) == [
        f"NOTICE: the keys of {ALICE} on example.org changed since you last looked them up:",
        f"  position 2: update, signed by the previous key; new signing key {new}",
        f"Check with {ALICE} (in person, or on another channel) that the signing key {new}"
        " is theirs before you trust it."]
    assert Home(str(bob)).shown("example.org", ALICE) == Shown(2, new)
    lookup_again_is_silent(bob)


def test_a_recovery_and_an_update_since_are_both_announced(alice, bob, tmp_path):
    assert keyclient(alice, "recover", ALICE, "--escrow",
                     str(tmp_path / "escrow.txt")).exit_code == 0
    assert keyclient(alice, "update", ALICE).exit_code == 0
    result = keyclient(bob, "lookup", ALICE)
    assert result.exit_code == 0, result.output
    lines = announced(result)
    assert lines[0].startswith(f"NOTICE: the keys of {ALICE} on example.org changed")
    assert lines[1].startswith("  position 2: recovery, authorized by the escrow key (as after "
                               "a lost or stolen key); new signing key ")
    assert lines[2] == ("  position 3: update, signed by the previous key; new signing key "
                        f"{shown_fingerprint(result)}")
    lookup_again_is_silent(bob)


def test_a_new_owner_is_a_warning_and_exit_status_5_once(app_server, bob):
    later = now_ms() + 3 * YEAR_MS        # past alice's not_after_ts and the grace
    with at(later):
        ServerUserActions(app_server).register(ALICE)
    with at(later + 60_000):
        result = keyclient(bob, "lookup", ALICE)
        assert result.exit_code == EXIT_NEW_OWNER, result.output
        assert f"{ALICE}: current" in result.stdout
        assert announced(result) == [
            f"WARNING: the keys of {ALICE} on example.org changed since you last looked them"
            " up:",
            "  position 2: new owner: the name was reclaimed after it expired, it may be "
            f"another person now; new signing key {shown_fingerprint(result)}",
            f"Check with {ALICE} (in person, or on another channel) that the signing key "
            f"{shown_fingerprint(result)} is theirs before you trust it."]
        lookup_again_is_silent(bob)


def test_keyinit_fetch_announces_the_change_before_it_uses_the_keys(alice, bob):
    assert keyclient(alice, "update", ALICE).exit_code == 0
    assert keyclient(alice, "keyinit", "publish", ALICE, "-n", "1").exit_code == 0
    fetched = keyclient(bob, "keyinit", "fetch", ALICE)
    assert fetched.exit_code == 0, fetched.output
    assert "position 2: update, signed by the previous key" in fetched.stderr
    assert '"identity": "alice@example.org"' in fetched.stdout       # the JSON stays clean
    lookup_again_is_silent(bob)


def test_a_failing_keyinit_fetch_still_announces_a_new_owner(app_server, bob):
    """The new owner published no KeyInit: the fetch fails (1), after the warning;
    the change is told once all the same."""
    later = now_ms() + 3 * YEAR_MS
    with at(later):
        ServerUserActions(app_server).register(ALICE)
    with at(later + 60_000):
        fetched = keyclient(bob, "keyinit", "fetch", ALICE)
        assert fetched.exit_code == 1, fetched.output
        assert "no KeyInit of alice@example.org" in fetched.output
        assert "WARNING: the keys of alice@example.org" in fetched.stderr
        assert "position 2: new owner" in fetched.stderr
        lookup_again_is_silent(bob)


def test_own_identities_are_left_to_monitoring(alice):
    """alice looking herself up after her own update: nothing to announce, nothing
    remembered (an entry she did not make is monitoring's alert, test_monitor.py)."""
    assert keyclient(alice, "lookup", ALICE).exit_code == 0
    assert keyclient(alice, "update", ALICE).exit_code == 0
    assert_silent(keyclient(alice, "lookup", ALICE))
    assert Home(str(alice)).shown("example.org", ALICE) is None


# --- the installed keyclient against a real server process -----------------------------

def installed_keyclient(home: Path, *args: str) -> subprocess.CompletedProcess:
    script = str(Path(sys.executable).parent / "keyclient")
    return subprocess.run([script, *args], capture_output=True, text=True,
                          env={**os.environ, "KEYCLIENT_HOME": str(home)})


def test_the_keyclient_script_announces_an_update_once(live_server, tmp_path, cheap_keystore):
    alice = registered_alice(live_server, tmp_path, tokens=2)
    bob = tmp_path / "bob"
    assert installed_keyclient(bob, "server", "add", live_server.url).returncode == 0
    first = installed_keyclient(bob, "lookup", ALICE)
    assert first.returncode == 0, first.stderr
    assert "NOTICE" not in first.stderr
    again = installed_keyclient(bob, "lookup", ALICE)
    assert again.returncode == 0 and "NOTICE" not in again.stderr, again.stderr

    assert keyclient(alice, "update", ALICE).exit_code == 0
    changed = installed_keyclient(bob, "lookup", ALICE)
    assert changed.returncode == 0, changed.stderr
    new = re.search(r"fingerprint: ([0-9a-f ]+)\n", changed.stdout).group(1)
    assert (f"NOTICE: the keys of {ALICE} on example.org changed since you last looked them "
            f"up:\n  position 2: update, signed by the previous key; new signing key {new}\n"
            ) in changed.stderr
    once = installed_keyclient(bob, "lookup", ALICE)
    assert once.returncode == 0 and "NOTICE" not in once.stderr, once.stderr

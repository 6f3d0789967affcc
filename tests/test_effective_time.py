"""Server times bounded by when the client first saw them (§7.3, revision 2,
"effective time"): rules that a later time makes easier are judged at
``min(entry.ts, F + 5 min)``, ``F`` being when this client first received the entry."""

import json

import pytest

from client.clock import now_ms
from client.store.home import Home
from conftest import (DAY_MS, ServerUserActions, at, keyclient,
                      serve_for_years)

YEAR_MS = 365 * DAY_MS


@pytest.fixture
def app_server(tmp_path, monkeypatch):
    """An in-process server whose keys outlive clocks moved years ahead (takeovers)."""
    return serve_for_years(monkeypatch, tmp_path / "app")


@pytest.fixture
def users_app(app_server):
    return ServerUserActions(app_server)


@pytest.fixture
def takeover(app_server, users_app, tmp_path):
    """alice registered now and seen by a client; then the server appends a new owner
    for alice@ (msgcount 0) dated two years ahead, past her not_after_ts plus the
    reclaim grace, as a server with a clock (or a will) in the future does."""
    users_app.register("alice@example.org")
    home = tmp_path / "home"
    assert keyclient(home, "server", "add", app_server.url).exit_code == 0
    first = keyclient(home, "lookup", "alice@example.org")
    assert first.exit_code == 0, first.output
    with at(now_ms() + 2 * YEAR_MS):
        users_app.register("alice@example.org")
    return home


def test_a_takeover_dated_in_the_future_is_refused_with_the_evidence_kept(takeover):
    result = keyclient(takeover, "lookup", "alice@example.org")
    assert result.exit_code == 1, result.output
    assert "this server is cheating" in result.output
    assert "alice@example.org, message 1 (msgcount 0)" in result.output
    assert "already registered" in result.output
    assert "kept as evidence" in result.output and "keyclient evidence" in result.output
    [(_, what, replies, _)] = Home(str(takeover)).evidence("example.org")
    assert "this server is cheating" in what and "already registered" in what
    assert [reply["entry"]["hashchain_pos"] for reply in replies] == [1, 2]
    assert replies[1]["entry"]["ts"] > now_ms() + YEAR_MS              # dated ahead
    assert all(reply["signatures"]["example.org"] for reply in replies)  # as signed
    # Caught again, kept once; the command lists it.
    assert keyclient(takeover, "lookup", "alice@example.org").exit_code == 1
    assert len(Home(str(takeover)).evidence("example.org")) == 1
    listed = keyclient(takeover, "evidence")
    assert listed.exit_code == 0
    assert "already registered" in listed.output and "positions 1, 2" in listed.output
    exported = json.loads(keyclient(takeover, "evidence", "--json").output)
    assert [piece["replies"] for piece in exported] == [replies]


def test_the_same_takeover_seen_in_its_time_is_accepted(takeover, app_server):
    """The rule is not a ban on reclaims: a client that first receives the entry two
    years on (its own clock then) accepts the new owner."""
    later = takeover.parent / "later"
    with at(now_ms() + 2 * YEAR_MS + 60_000):
        assert keyclient(later, "server", "add", app_server.url).exit_code == 0
        result = keyclient(later, "lookup", "alice@example.org")
    assert result.exit_code == 0, result.output
    assert "positions:  1, 2" in result.output


def test_entries_remember_when_they_were_first_received(app_server, users_app, tmp_path):
    home = tmp_path / "home"
    keyclient(home, "server", "add", app_server.url)
    t = now_ms()
    with at(t):
        keyclient(home, "sync")
    users_app.register("bob@example.org")
    with at(t + 1000):
        keyclient(home, "sync")
    chain = Home(str(home)).chain("example.org")
    assert [chain.first_seen(pos) for pos in (0, 1, 2)] == [t, t + 1000, None]


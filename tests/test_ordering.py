"""Server times in order (§7.3 "ordered", ``client.trust.ordering``): the rule on its
own, and the real ``keyclient`` against a server that dates an entry before the
one it follows."""

import pytest

from client.clock import now_ms
from client.protocol.wire import ReplyEntry, format_uid_message_reply, parse_uid_message_reply
from client.store.home import Home
from client.trust.ordering import RepliesOutOfOrder, check_ordered
from conftest import DAY_MS, at, keyclient
from keyserver.storage import chain

HOUR_MS = 3600 * 1000


def reply(pos, ts):
    return parse_uid_message_reply(format_uid_message_reply(
        ReplyEntry(bytes(72), bytes(153), pos, ts), {"example.org": {"ed25519:a": "sig"}}))


@pytest.mark.parametrize("times", [
    [(0, 5), (1, 5), (2, 6)],                  # equal times are in order
    [(3, 9), (1, 2), (2, 2)],                  # any order of arrival
    [(1, 3), (1, 3), (2, 4)],                  # one position twice
    [],
])
def test_times_that_never_decrease_pass(times):
    check_ordered([reply(pos, ts) for pos, ts in times])


@pytest.mark.parametrize("times, earlier, later", [
    ([(0, 5), (1, 4)], 0, 1),
    ([(4, 10), (1, 2), (7, 9)], 4, 7),
    ([(1, 10), (1, 2), (2, 5)], 1, 2),         # a position's later reply meets the next
    ([(1, 3), (2, 2), (2, 9)], 1, 2),          # and its earlier one the previous
])
def test_a_decrease_is_caught_with_both_replies(times, earlier, later):
    with pytest.raises(RepliesOutOfOrder, match="this server is cheating") as caught:
        check_ordered([reply(pos, ts) for pos, ts in times])
    assert [r.entry.hashchain_pos for r in caught.value.replies] == [earlier, later]
    assert caught.value.position == later


@pytest.mark.parametrize("batch, caught", [
    ([(0, 50), (1, 50), (512, 600), (513, 600)], None),
    ([(0, 50), (1, 50), (512, 200), (513, 600)], (300, 512)),   # the one before a later run
    ([(0, 150), (1, 150), (512, 600), (513, 600)], (1, 10)),    # the one after the first run
    ([(299, 290), (300, 300), (301, 310)], None),               # one already held, in the run
    ([(299, 290), (300, 300), (301, 299)], (300, 301)),
    ([(600, 600), (700, 700)], None),
])
def test_a_batch_of_runs_is_checked_against_what_is_held_around_each(tmp_path, batch, caught):
    """A batch of bundles is checked run by run (``ServerSession.hold``) against the
    held replies inside and on either side of each run: what lies between two runs
    cannot contradict a third. A decrease is kept as evidence."""
    from client.session import ServerSession

    home = Home(str(tmp_path / "home"))
    session = ServerSession(home, "example.org", "http://ks.test", fetcher=object())
    session.hold([reply(10, 100), reply(300, 300), reply(600, 600)])
    if caught is None:
        session.hold([reply(pos, ts) for pos, ts in batch])
        return
    with pytest.raises(RepliesOutOfOrder) as error:
        session.hold([reply(pos, ts) for pos, ts in batch])
    assert [r.entry.hashchain_pos for r in error.value.replies] == list(caught)
    [(_, _, kept, _)] = home.evidence("example.org")
    assert [r["entry"]["hashchain_pos"] for r in kept] == list(caught)


@pytest.fixture
def backdating_server(app_server, users_app, monkeypatch):
    """A server that dates carol's entry (position 2) an hour before bob's (position 1):
    it takes the clock as it reads it instead of max(now, the previous time), which an
    honest server never does (§5). Returns the time to run the clients at."""
    t = now_ms() + DAY_MS
    with at(t):
        users_app.register("bob@example.org")
    monkeypatch.setattr(chain, "next_ts", lambda last, now: now)
    with at(t - HOUR_MS):
        users_app.register("carol@example.org")
    return t + 60_000


@pytest.mark.parametrize("who", ["bob", "carol"])
def test_keyclient_refuses_a_server_whose_times_decrease(backdating_server, app_server,
                                                        tmp_path, who):
    """Bob's and carol's replies come in one bundle (§5.1), with keyserver@'s: the
    first command that fetches it holds both, whoever it looks up, and catches the
    server (a reply held before and one fetched later: ``test_home.py``)."""
    home = tmp_path / "home"
    with at(backdating_server):
        assert keyclient(home, "server", "add", app_server.url).exit_code == 0
        caught = keyclient(home, "lookup", f"{who}@example.org")
    assert caught.exit_code == 1
    assert "this server is cheating" in caught.output
    assert "position 2" in caught.output and "position 1" in caught.output
    state = Home(str(home))
    [(_, what, replies, _)] = state.evidence("example.org")
    assert "this server is cheating" in what
    assert [r["entry"]["hashchain_pos"] for r in replies] == [1, 2]
    assert replies[0]["entry"]["ts"] - replies[1]["entry"]["ts"] == HOUR_MS
    assert all(r["signatures"]["example.org"] for r in replies)    # as the server signed them


def test_an_honest_server_clamps_the_same_clock(app_server, users_app, tmp_path):
    """The same backdated clock against an honest server: no decrease, no alarm."""
    t = now_ms() + DAY_MS
    with at(t):
        users_app.register("bob@example.org")
    with at(t - HOUR_MS):
        users_app.register("carol@example.org")
    home = tmp_path / "home"
    with at(t + 60_000):
        keyclient(home, "server", "add", app_server.url)
        for name in ("bob", "carol"):
            result = keyclient(home, "lookup", f"{name}@example.org")
            assert result.exit_code == 0, result.output
    assert Home(str(home)).evidence("example.org") == []

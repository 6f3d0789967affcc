"""A server caught cheating by its own signed replies (§7.3): an identity history whose
replies are all validly signed but whose messages break §4 fails the lookup, and the
replies are kept as evidence in the home (``client.trust.evidence``, the session
records them), listed by ``keyclient evidence``. The takeover dated in the future is
in ``test_effective_time.py``, times that decrease in ``test_ordering.py``."""

import json

import nacl.signing
import pytest

from client.clock import now_ms
from client.protocol.uidmessage import parse_uid_message
from client.store.home import Home
from client.trust.evidence import BrokenHistory, ServerCheating
from client.trust.history import verify_history
from conftest import Account, UserActions, keyclient
from test_history import ANY_TIME, ALICE, SERVER, T0, match, server_record


def test_a_signed_history_that_breaks_the_rules_is_evidence():
    """Pure: every reply validly signed, the sequence broken (an update by a key
    that is not the previous one) -> ``BrokenHistory`` with all the replies."""
    matches = [match(1, ALICE), match(4, ALICE, ts=T0 + 1, msgcount=1,
                                      previous=nacl.signing.SigningKey.generate())]
    with pytest.raises(BrokenHistory) as caught:
        verify_history(ALICE, SERVER, matches, server_record(), ANY_TIME)
    assert isinstance(caught.value, ServerCheating)
    assert caught.value.replies == tuple(found.reply for found in matches)
    assert str(caught.value).startswith(f"this server is cheating: it signed the history of "
                                        f"{ALICE} (positions 1, 4)")
    assert "usersignature (by the previous sigkey) does not verify" in str(caught.value)


def test_a_reply_the_server_did_not_sign_is_no_evidence():
    """A bad signature proves nothing against the server: a plain failure."""
    stranger = nacl.signing.SigningKey.generate()
    with pytest.raises(Exception) as caught:
        verify_history(ALICE, SERVER, [match(1, ALICE, msgcount=1, server_key=stranger)],
                       server_record(), ANY_TIME)
    assert not isinstance(caught.value, ServerCheating)


def append_unchecked(app_server, message: dict) -> None:
    """The server appends ``message`` without any of the §4 checks, signing its reply
    with its real key, as a cheating server does."""
    from keyserver.http.context import sign
    from keyserver.service import uids
    from keyserver.storage import db
    from keyserver.storage.uids import latest

    with app_server.app.app_context():
        database = db.get_db()
        parsed = parse_uid_message(message)
        with db.transaction(database):
            uids.store_uid_message(database, parsed, now_ms(), sign,
                                   latest(database, parsed.identity))


@pytest.fixture
def forged_update(app_server, tmp_path):
    """alice registered and seen by a client; then the server appends an update of
    alice signed by a key that is not hers (its own, say): a takeover without her key."""
    users = UserActions(app_server.app.test_client())
    alice = users.register(ALICE)
    home = tmp_path / "home"
    assert keyclient(home, "server", "add", app_server.url).exit_code == 0
    assert keyclient(home, "lookup", ALICE).exit_code == 0
    stranger = nacl.signing.SigningKey.generate()
    message, _ = users.update_message(Account(ALICE, stranger, alice.escrow, alice.message,
                                              alice.reply))
    append_unchecked(app_server, message)
    return home


def test_a_forged_update_is_refused_with_the_evidence_kept(forged_update):
    result = keyclient(forged_update, "lookup", ALICE)
    assert result.exit_code == 1, result.output
    assert f"this server is cheating: it signed the history of {ALICE} (positions 1, 2)" \
        in result.output
    assert "usersignature (by the previous sigkey) does not verify" in result.output
    assert "2 signed replies that prove it are kept as evidence in " \
        f"{forged_update / 'state.sqlite'}" in result.output
    [(_, what, replies, _)] = Home(str(forged_update)).evidence("example.org")
    assert "usersignature (by the previous sigkey) does not verify" in what
    assert [reply["entry"]["hashchain_pos"] for reply in replies] == [1, 2]
    listed = keyclient(forged_update, "evidence", "--server", "example.org")
    assert listed.exit_code == 0
    assert listed.output.startswith("example.org, ") and "positions 1, 2]" in listed.output
    [piece] = json.loads(keyclient(forged_update, "evidence", "--json").output)
    assert piece["server"] == "example.org" and piece["replies"] == replies


def test_no_evidence_from_an_honest_server(app_server, users_app, tmp_path):
    users_app.register(ALICE)
    home = tmp_path / "home"
    keyclient(home, "server", "add", app_server.url)
    assert keyclient(home, "lookup", ALICE).exit_code == 0
    assert keyclient(home, "evidence").output == "no evidence\n"
    assert Home(str(home)).evidence("example.org") == []

"""The user's own identities through ``keyclient`` against a server in-process: update
(new sigkey signed by the old one), recover (by the paper escrow key), keys never
lost to a failure halfway, and ``verify``/``sync`` checking our replies (§7.5)."""

import json
import sqlite3

import pytest

from client.protocol.encoding import b64encode, b64url_encode
from client.protocol.errors import ProtocolError, TransportError
from client.protocol.hashchain import ENTRY_SIZE
from client.store.keystore import Keystore
from client.store.paper import parse_paper_backup
from conftest import keyclient, registered_alice, registered_home, serve_in_process

ALICE = "alice@example.org"


def key_files(home):
    return sorted(p.name for p in (home / "keys").iterdir())


def sigkey_b64(home):
    key = Keystore(str(home / "keys"), "correct horse").get_signing_key(
        "alice_at_example.org.sigkey")
    return b64encode(bytes(key.verify_key))


def looked_up(home):
    result = keyclient(home, "--verbose", "lookup", ALICE)   # with the msgcount
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def alice(app_server, tmp_path, cheap_keystore):  # noqa: F811
    """A home that registered alice (escrow backup in tmp_path/escrow.txt) and holds
    two more tokens."""
    return registered_alice(app_server, tmp_path)


def test_update_replaces_the_sigkey(alice):
    before = sigkey_b64(alice)
    result = keyclient(alice, "-v", "update", ALICE)
    assert result.exit_code == 0, result.output
    assert "updated alice@example.org at position 2 with a new signing key (msgcount 1)" in result.output
    after = sigkey_b64(alice)
    assert after != before
    output = looked_up(alice)
    assert "msgcount:   1" in output and f"sigkey:     {after}" in output
    assert "positions:  1, 2" in output
    assert key_files(alice) == ["alice_at_example.org.sigkey.key"]
    assert "1 available, 2 spent" in keyclient(alice, "tokens", "list").output


def test_a_refused_update_keeps_the_old_key(alice, app_server, tmp_path):
    before = sigkey_b64(alice)
    # Another home spends the wallet's next token first: the server says TOKEN_SPENT.
    with sqlite3.connect(alice / "wallet.sqlite") as conn:
        [(token,)] = conn.execute("SELECT token FROM tokens WHERE state = 'available'"
                                  " ORDER BY added_ts, rowid LIMIT 1")
    other = tmp_path / "other"
    keyclient(other, "server", "add", app_server.url)
    keyclient(other, "tokens", "add", b64url_encode(token))
    assert keyclient(other, "register", "bob@example.org", "--yes").exit_code == 0
    result = keyclient(alice, "update", ALICE)
    assert result.exit_code == 1 and "the server refused: " in result.output
    assert "run the command again (it takes another token)" in result.output
    assert "TOKEN_SPENT" not in result.output and "http" not in result.output
    assert sigkey_b64(alice) == before
    assert key_files(alice) == ["alice_at_example.org.sigkey.key"]     # no pending key left
    assert "msgcount:   0" in looked_up(alice)
    assert "1 available, 2 spent" in keyclient(alice, "tokens", "list").output
    assert keyclient(alice, "-v", "update", ALICE).exit_code == 0              # the next token works


def test_an_update_whose_outcome_is_unknown_is_settled_from_the_chain(alice, monkeypatch):
    from client.accounts import Accounts

    original = Accounts._confirm_on_chain

    def answer_lost(self, identity, message, reply):
        raise TransportError("connection reset")

    monkeypatch.setattr(Accounts, "_confirm_on_chain", answer_lost)
    result = keyclient(alice, "-v", "update", ALICE)
    assert result.exit_code == 1 and "connection reset" in result.output
    assert key_files(alice) == ["alice_at_example.org.sigkey.key",
                                "alice_at_example.org.sigkey.next.key"]
    pending = Keystore(str(alice / "keys"), "correct horse").get_signing_key(
        "alice_at_example.org.sigkey.next")
    monkeypatch.setattr(Accounts, "_confirm_on_chain", original)
    # The server did accept it: the next command promotes the pending key and goes on.
    result = keyclient(alice, "-v", "update", ALICE)
    assert result.exit_code == 0, result.output
    assert "an earlier key change did reach the chain" in result.output
    assert "msgcount 2" in result.output
    assert key_files(alice) == ["alice_at_example.org.sigkey.key"]
    assert sigkey_b64(alice) != b64encode(bytes(pending.verify_key))


def test_a_5xx_after_the_write_committed_leaves_the_outcome_unknown(alice, monkeypatch):
    """A gateway may pass the update on and answer 502 after the server committed it:
    neither the new key nor the token may be thrown away as if it had been refused."""
    from client.transport.api import KeyserverAPI

    original = KeyserverAPI.update_uid

    def gateway_error(self, message, authorization):
        original(self, message, authorization)
        raise ProtocolError("PUT /v1/users/alice@example.org: 502  nope", status=502)

    with monkeypatch.context() as patch:
        patch.setattr(KeyserverAPI, "update_uid", gateway_error)
        result = keyclient(alice, "-v", "update", ALICE)
        assert result.exit_code == 1 and "502" in result.output
        assert key_files(alice) == ["alice_at_example.org.sigkey.key",
                                    "alice_at_example.org.sigkey.next.key"]
        assert "1 available, 1 spent, 1 unknown" in keyclient(alice, "tokens", "list").output
    result = keyclient(alice, "-v", "update", ALICE)
    assert result.exit_code == 0, result.output
    assert "an earlier key change did reach the chain" in result.output
    assert "msgcount 2" in result.output
    assert key_files(alice) == ["alice_at_example.org.sigkey.key"]


def redirecting(app_server, status: int):
    """Put a ``TamperFetcher`` in front of ``app_server`` that passes every request on
    (the server commits the write) and answers a PUT or POST with redirect ``status``,
    the real answer as its body; return the fetcher."""
    from simulator import TamperFetcher
    from tamper_proxy import Answer

    def attack(request):
        answer = request.forward()
        if request.method in ("PUT", "POST"):
            return Answer(status, {**answer.headers, "Location": "http://elsewhere.test/"},
                          answer.body)
        return answer

    fetcher = app_server.fetcher = TamperFetcher(app_server.app, app_server.url)
    fetcher.attack = attack
    return fetcher


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_after_the_write_committed_leaves_the_outcome_unknown(alice, app_server,
                                                                         status):
    """The client follows no redirect and takes none for success: like a 5xx it says
    nothing of whether the write happened, so the token becomes unknown and the new
    key stays pending until the chain settles it."""
    fetcher = redirecting(app_server, status)
    result = keyclient(alice, "-v", "update", ALICE)
    assert result.exit_code == 1 and f"alice@example.org: {status} " in result.output
    assert key_files(alice) == ["alice_at_example.org.sigkey.key",
                                "alice_at_example.org.sigkey.next.key"]
    assert "1 available, 1 spent, 1 unknown" in keyclient(alice, "tokens", "list").output
    fetcher.attack = None
    result = keyclient(alice, "-v", "update", ALICE)
    assert result.exit_code == 0, result.output
    assert "an earlier key change did reach the chain" in result.output
    assert "msgcount 2" in result.output
    assert key_files(alice) == ["alice_at_example.org.sigkey.key"]
    assert fetcher.errors == []


def test_a_pending_key_the_chain_never_saw_is_dropped(alice, monkeypatch):
    from client.accounts import Accounts

    def never_sent(self, message, *, pending=None):
        raise TransportError("timed out before sending")

    before = sigkey_b64(alice)
    with monkeypatch.context() as patch:
        patch.setattr(Accounts, "_submit", never_sent)
        assert keyclient(alice, "-v", "update", ALICE).exit_code == 1
        assert len(key_files(alice)) == 2
    result = keyclient(alice, "-v", "update", ALICE)
    assert result.exit_code == 0, result.output
    assert "msgcount 1" in result.output and "earlier key change" not in result.output
    assert key_files(alice) == ["alice_at_example.org.sigkey.key"]
    assert sigkey_b64(alice) != before


def test_recover_with_the_paper_escrow_key(alice, tmp_path):
    paper = tmp_path / "escrow.txt"
    _, escrow = parse_paper_backup(paper.read_text())
    (alice / "keys" / "alice_at_example.org.sigkey.key").unlink()      # the sigkey is lost
    lost = keyclient(alice, "-v", "update", ALICE)
    assert lost.exit_code == 1 and "keyclient recover" in lost.output
    result = keyclient(alice, "-v", "recover", ALICE, "--escrow", str(paper))
    assert result.exit_code == 0, result.output
    assert "recovered alice@example.org at position 2 with a new signing key (msgcount 1)" in result.output
    output = looked_up(alice)
    assert f"sigkey:     {sigkey_b64(alice)}" in output
    assert f"sigescrow:  {b64encode(bytes(escrow.verify_key))}" in output   # kept
    assert keyclient(alice, "-v", "update", ALICE).exit_code == 0             # the new key works


def test_recover_refuses_a_wrong_backup(alice, tmp_path, app_server):
    retyped = tmp_path / "retyped.txt"
    retyped.write_text((tmp_path / "escrow.txt").read_text().upper())  # case does not matter
    other = keyclient(alice, "recover", "bob@example.org", "--escrow", str(retyped))
    assert other.exit_code == 1 and "the backup is for alice@example.org" in other.output
    bob_home = registered_home(app_server, tmp_path / "b", tokens=1)
    bob_paper = tmp_path / "bob.txt"
    assert keyclient(bob_home, "register", "bob@example.org", "--escrow-out", str(bob_paper),
                     "--yes").exit_code == 0
    text = bob_paper.read_text().replace("bob@example.org", ALICE)
    forged = tmp_path / "forged.txt"
    forged.write_text(text)
    result = keyclient(alice, "-v", "recover", ALICE, "--escrow", str(forged))
    assert result.exit_code == 1 and "not the escrow key registered" in result.output
    assert "msgcount:   0" in looked_up(alice)


def test_verify_rechecks_the_chain_and_our_replies(alice):
    keyclient(alice, "-v", "update", ALICE)
    result = keyclient(alice, "verify")
    assert result.exit_code == 0, result.output
    assert "example.org: 3 entries verified, 2 of your replies match the chain" in result.output
    entries = alice / "chains" / "example.org" / "entries.bin"
    data = bytearray(entries.read_bytes())
    data[ENTRY_SIZE + 60] ^= 1                            # a bit rots on the local disk
    entries.write_bytes(bytes(data))
    result = keyclient(alice, "verify")
    assert result.exit_code == 1 and "entry 1" in result.output


def test_a_chain_contradicting_a_reply_we_hold_is_refused_whole(alice, app_server):
    """A reply promised position 2 to another entry than the chain then holds there."""
    with sqlite3.connect(alice / "state.sqlite") as conn:
        [(reply,)] = conn.execute("SELECT reply FROM own_replies WHERE pos = 1")
        promised = json.loads(reply)
        promised["entry"]["hashchain_pos"] = 2
        conn.execute("INSERT INTO own_replies (server, identity, pos, msgcount, reply)"
                     " VALUES ('example.org', ?, 2, 1, ?)", (ALICE, json.dumps(promised)))
    app_server.load_chain(3)
    entries = alice / "chains" / "example.org" / "entries.bin"
    before = entries.read_bytes()
    result = keyclient(alice, "sync")
    assert result.exit_code == 1
    assert "another entry at position 2 than the server's signed reply" in result.output
    assert entries.read_bytes() == before and len(before) == 2 * ENTRY_SIZE
    assert "2 entries verified" in keyclient(alice, "server", "list").output


def test_verify_checks_the_replies_we_hold(alice):
    with sqlite3.connect(alice / "state.sqlite") as conn:
        [(reply,)] = conn.execute("SELECT reply FROM own_replies WHERE pos = 1")
        changed = json.loads(reply)
        changed["entry"]["hashchain_pos"] = 0
        conn.execute("UPDATE own_replies SET pos = 0, reply = ? WHERE pos = 1",
                     (json.dumps(changed),))
    result = keyclient(alice, "verify")
    assert result.exit_code == 1
    assert "no longer holds alice@example.org's entry at position 0" in result.output


def test_free_operations_need_no_tokens(tmp_path, monkeypatch, cheap_keystore):  # noqa: F811
    """An operator who prices nothing: the wallet is never asked."""
    monkeypatch.setenv("KEYSERVER_TOKEN_PRICES",
                       '{"create_uid": 0, "update_uid": 0, "add_keyinit": 0}')
    server = serve_in_process(monkeypatch, tmp_path / "free")
    home = tmp_path / "home"
    keyclient(home, "server", "add", server.url)
    for args in (("register", ALICE, "--yes"), ("update", ALICE),
                 ("keyinit", "publish", ALICE, "-n", "2")):
        result = keyclient(home, *args)
        assert result.exit_code == 0, result.output
    assert "example.org: 0 available" in keyclient(home, "tokens", "list").output


def test_register_names_at_most_four_repositories(tmp_path, monkeypatch, cheap_keystore):
    """A server vouching for more repositories than a message may name (§4, §9):
    the registration names its own first, and as many as fit."""
    vouched = [f"https://keyinits{i}.example.net" for i in range(5)]
    monkeypatch.setenv("KEYSERVER_ALLOWED_REPOURIS", json.dumps(vouched))
    server = serve_in_process(monkeypatch, tmp_path / "app")
    home = registered_home(server, tmp_path)
    result = keyclient(home, "register", ALICE, "--yes")
    assert result.exit_code == 0, result.output
    from client.session import ServerSession
    from client.store.home import Home

    session = ServerSession(Home(str(home)), "example.org", server.url)
    session.sync()
    assert list(session.lookup(ALICE).message.repouris) == [server.url, *vouched[:3]]

"""The client keyring against a real server in-process (§11.2, §11.3, §11.4): every
window of a key document at its boundary (freezegun), refetching, documents that
name keys off the chain, renewals, and the notaries that corroborate a server's
keys (a fake notary in front of the app: ``simulator.FakeNotary``)."""

import json
import re

import pytest

from client.clock import now_ms
from client.protocol.encoding import b64encode
from client.session import ServerSession, add_server
from client.store.home import Home
from client.trust.keydocs import KeyDocumentRefused, KeyNotValid
from keyserver.service.signing import read_keys
from simulator import FakeNotary, TamperFetcher
from tamper_proxy import (KEY_DOCUMENT, capabilities_changed, key_document_changed,
                          replies_changed, resign)
from conftest import at, keyclient

SERVER = "example.org"
MINUTE, HOUR = 60_000, 3_600_000


@pytest.fixture
def tamper(app_server):
    return TamperFetcher(app_server.app, app_server.url)


def session(app_server, home, fetcher):
    return ServerSession(home, SERVER, app_server.url, fetcher=fetcher)


def signing_keys(app_server):
    """The instance's signing keys (keyserver.service.signing.ServerKey), oldest first."""
    return read_keys(str(app_server.instance / "signing.key"))


def signed_by(key, pos=None):
    """An attack re-signing the reply at ``pos`` (every reply: None) with ``key``."""
    def change(reply):
        signed = resign(reply, key.signing_key, key.key_id)
        reply.clear()
        reply.update(signed)
    return replies_changed(change, pos)


def fetched_documents(tamper) -> int:
    return sum(path == KEY_DOCUMENT for _, path in tamper.seen)


@pytest.fixture
def rotated(app_server, users_app, tamper, tmp_path):
    """A home that met the server and synced at ``t0``; then alice registered, the
    server key rotated with a 1 h overlap at ``t0 + 1 s``, bob registered 10 minutes
    later (in the overlap) and carol 2 hours later (after it)."""
    t0 = now_ms()
    home = Home(str(tmp_path / "home"))
    with at(t0):
        add_server(home, app_server.url, fetcher=tamper)
        session(app_server, home, tamper).sync()
        alice = users_app.register("alice@example.org")
    with at(t0 + 1000):
        app_server.command("keys", "rotate", "--overlap", "1h")
    with at(t0 + 10 * MINUTE):
        bob = users_app.register("bob@example.org")
    with at(t0 + 2 * HOUR):
        carol = users_app.register("carol@example.org")
    positions = {name: reply["entry"]["hashchain_pos"]
                 for name, reply in [("alice", alice), ("bob", bob), ("carol", carol)]}
    return t0, home, positions


def test_the_server_signs_with_the_new_key_from_the_rotation_on(app_server, rotated, tamper):
    t0, home, positions = rotated
    old, new = signing_keys(app_server)
    with at(t0 + 3 * HOUR):
        s = session(app_server, home, tamper)
        s.sync()
        for name in positions:
            result = s.lookup(f"{name}@example.org")
            [key_id] = result.history[-1].reply.raw["signatures"][SERVER]
            assert key_id == (old.key_id if name == "alice" else new.key_id)


def test_a_reply_by_the_old_key_counts_in_the_overlap_only(app_server, rotated, tamper,
                                                          tmp_path):
    """bob's reply (dated 10 minutes after the rotation) re-signed with the old key
    verifies: the document gives the old key an expired_ts 1 h after the rotation.
    carol's (2 h after) does not, whatever the signature."""
    t0, home, positions = rotated
    old, _ = signing_keys(app_server)
    with at(t0 + 3 * HOUR):
        tamper.attack = signed_by(old, positions["bob"])
        s = session(app_server, home, tamper)
        s.sync()
        assert s.lookup("bob@example.org").message.identity == "bob@example.org"
        other = Home(str(tmp_path / "other"))
        add_server(other, app_server.url, fetcher=tamper)
        tamper.attack = signed_by(old, positions["carol"])
        with pytest.raises(KeyNotValid, match="the reply for position "
                           f"{positions['carol']} is signed by a key of example.org that "
                           "had expired before the time it bears"):
            s = session(app_server, other, tamper)
            s.sync()      # the first bundle holds every entry: caught on the way
            s.lookup("carol@example.org")
    assert tamper.errors == []


def test_capabilities_by_the_old_key_count_until_its_expired_ts(app_server, rotated, tamper):
    """Capabilities have no position: the head's key or the previous distinct one,
    which the document bounds. A document that listed the old key as current says so
    only up to when it was fetched: a later object makes the keyring ask again."""
    t0, home, _ = rotated
    old, _ = signing_keys(app_server)
    tamper.attack = capabilities_changed(     # the old key listed, as in the overlap
        lambda c: c["sigpubkeys"].update({old.key_id: b64encode(old.pubkey)}), signed_by=old)
    with at(t0 + HOUR - 1):                      # the last millisecond of the overlap
        before = fetched_documents(tamper)
        session(app_server, home, tamper).sync()
        assert fetched_documents(tamper) == before + 1   # the cache predates the rotation
    with at(t0 + 1000 + HOUR):                   # expired_ts: the overlap is over
        with pytest.raises(KeyNotValid, match="the capabilities document is signed by a key "
                           "of example.org that had expired"):
            session(app_server, home, tamper).sync()
    assert tamper.errors == []


def test_a_document_is_fetched_again_only_when_it_no_longer_covers_ts(app_server, tamper,
                                                                     tmp_path):
    t0 = now_ms()
    home = Home(str(tmp_path / "home"))
    with at(t0):
        add_server(home, app_server.url, fetcher=tamper)
        session(app_server, home, tamper).sync()
    assert fetched_documents(tamper) == 1                # at server add, kept in the home
    validity = app_server.app.config["KEY_VALIDITY"]
    with at(t0 + validity):                              # valid_until_ts: still covered
        session(app_server, home, tamper).sync()
    assert fetched_documents(tamper) == 1
    with at(t0 + validity + 1):                          # past it: fetched again, once
        s = session(app_server, home, tamper)
        s.sync()
        s.lookup("keyserver@example.org")
    assert fetched_documents(tamper) == 2
    assert home.key_document(SERVER)[0].valid_until_ts == t0 + 2 * validity + 1


def test_a_document_naming_a_key_off_the_chain_is_refused(app_server, tamper, tmp_path):
    """The server's document adds an old key that no keyserver@ entry ever carried."""
    import nacl.signing

    [current] = signing_keys(app_server)
    stranger = nacl.signing.SigningKey.generate()

    tamper.attack = key_document_changed(
        lambda document: document.update(old_verify_keys={"ed25519:gone": {
            "key": b64encode(bytes(stranger.verify_key)), "expired_ts": 1}}),
        {current.key_id: current.signing_key}, SERVER)
    home = Home(str(tmp_path / "home"))
    add_server(home, app_server.url, fetcher=tamper)    # no chain yet to hold it against
    with pytest.raises(KeyDocumentRefused, match="names keys that are no signing key of "
                       f"keyserver@example.org on the chain: {re.escape(b64encode(bytes(stranger.verify_key)))}"):
        session(app_server, home, tamper).sync()
    assert tamper.errors == []


def test_a_renewal_keeps_the_overlap_of_the_previous_distinct_key(app_server, rotated, tamper):
    """keyserver@ renewed (msgcount + 1, the same sigkey) inside the overlap: the key
    before the renewal's is the new key again, yet the old key still counts until its
    expired_ts (§11.3, revision 2)."""
    from keyserver.http.context import policy, server_keys
    from keyserver.service import own
    from keyserver.storage import db
    from keyserver.storage.db import transaction

    t0, home, positions = rotated
    with at(t0 + 5 * MINUTE), app_server.app.app_context():
        database = db.get_db()
        with transaction(database):
            own.update(database, policy(), server_keys(), own.current(database), now_ms())
        renewal = own.latest(database)
    assert renewal.msgcount == 2
    old, new = signing_keys(app_server)
    assert renewal.sigkey.pubkey == new.pubkey
    with at(t0 + 3 * HOUR):
        tamper.attack = signed_by(old, positions["bob"])
        s = session(app_server, home, tamper)
        s.sync()
        assert [key.pubkey for key in s.keys] == [old.pubkey, new.pubkey, new.pubkey]
        assert s.lookup("bob@example.org").message.identity == "bob@example.org"
        assert s.lookup("alice@example.org").message.identity == "alice@example.org"


# --- notaries (§11.4) ---------------------------------------------------------------

@pytest.fixture
def notary(app_server, tamper, monkeypatch):
    """A notary that saw the server's real document, in front of ``tamper`` (the
    client's view of the server), reached by every keyclient command of the test."""
    import client.transport.fetcher as fetching

    fake = FakeNotary(tamper, lambda: app_server.app.test_client().get(KEY_DOCUMENT).json)
    monkeypatch.setattr(fetching, "default_fetcher", lambda: fake)
    return fake


def test_notary_commands(tmp_path, notary):
    home = tmp_path / "home"
    assert "no notaries" in keyclient(home, "notary", "list").output
    assert keyclient(home, "notary", "add", *notary.cli_args()).exit_code == 0
    listed = keyclient(home, "notary", "list").output
    assert notary.name in listed and notary.url in listed
    bad = keyclient(home, "notary", "add", "n.org", "https://n.org", "ed25519:n", "AAAA")
    assert bad.exit_code == 2 and "Invalid value for KEY: KEY: must encode 32 bytes, not 3" \
        in bad.output
    assert keyclient(home, "notary", "remove", notary.name).exit_code == 0
    assert keyclient(home, "notary", "remove", notary.name).exit_code == 1


def test_without_a_notary_the_user_is_told_once(app_server, tmp_path, notary):
    home = tmp_path / "home"
    added = keyclient(home, "server", "add", app_server.url)
    assert added.exit_code == 0 and "no notary is configured" in added.output
    synced = keyclient(home, "sync")
    assert synced.exit_code == 0 and "notary" not in synced.output
    assert notary.queries == []


def test_first_contact_and_every_key_change_are_corroborated(app_server, tmp_path, notary):
    home = tmp_path / "home"
    keyclient(home, "notary", "add", *notary.cli_args())
    added = keyclient(home, "server", "add", app_server.url)
    assert added.exit_code == 0 and "notary" not in added.output
    assert keyclient(home, "sync").exit_code == 0
    assert len(notary.queries) == 1                      # at server add only
    [(key_id, asked)] = notary.queries[0]["server_keys"][SERVER].items()
    app_server.command("keys", "rotate")
    assert keyclient(home, "sync").exit_code == 0
    assert len(notary.queries) == 2                      # the new key on the chain
    assert set(notary.queries[1]["server_keys"][SERVER]) == {key_id, signing_keys(app_server)[1].key_id}
    assert keyclient(home, "sync").exit_code == 0
    assert len(notary.queries) == 2


def test_a_notary_that_saw_other_keys_stops_a_key_change(app_server, tmp_path, notary):
    home = tmp_path / "home"
    keyclient(home, "notary", "add", *notary.cli_args())
    assert keyclient(home, "server", "add", app_server.url).exit_code == 0
    before = notary.document()
    notary.document = lambda: before                     # it never saw the rotation
    app_server.command("keys", "rotate")
    refused = keyclient(home, "sync")
    assert refused.exit_code == 1
    assert "reports other keys of example.org" in refused.output
    assert "the notary does not know" in refused.output
    refused_again = keyclient(home, "lookup", "keyserver@example.org")
    assert refused_again.exit_code == 1                  # not remembered as corroborated


def test_a_split_view_is_refused_showing_both_documents(app_server, tamper, tmp_path, notary):
    """The server shows this client a key of its own making; the notary saw the real
    one. The server is not remembered, and the user sees both documents."""
    import nacl.signing

    evil = nacl.signing.SigningKey.generate()

    tamper.attack = key_document_changed(
        lambda document: document.update(verify_keys={
            "ed25519:evil": {"key": b64encode(bytes(evil.verify_key))}}),
        {"ed25519:evil": evil}, SERVER)
    home = tmp_path / "home"
    keyclient(home, "notary", "add", *notary.cli_args())
    refused = keyclient(home, "server", "add", app_server.url)
    assert refused.exit_code == 1
    [real] = signing_keys(app_server)
    assert "reports other keys of example.org than example.org shows this client" in refused.output
    assert b64encode(bytes(evil.verify_key)) in refused.output          # what we were shown
    assert b64encode(real.pubkey) in refused.output                     # what the notary saw
    assert json.loads(refused.output.split("example.org showed this client:\n")[1]
                      .split("\nnotary")[0])["verify_keys"] == {
        "ed25519:evil": {"key": b64encode(bytes(evil.verify_key))}}
    assert "example.org" not in keyclient(home, "server", "list").output
    assert tamper.errors == []

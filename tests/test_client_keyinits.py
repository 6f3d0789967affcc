"""``keyclient keyinit publish/fetch/flush`` against a server in-process (§9, §13): the
owner keeps the private keys, a sender gets each KeyInit once, verified with the
owner's sigkey from the chain and opened."""

import json
import sqlite3

import nacl.public
import nacl.signing
import pytest

from client.transport.api import KeyserverAPI
from client.protocol.encoding import b64decode
from client.protocol.keyinit import build_keyinit, build_session_anchor
from client.protocol.keys import X25519, KeyEntry
from client.store.keystore import Keystore
from conftest import keyclient, registered_home, serve_in_process

ALICE = "alice@example.org"
NONE_LEFT = f"no KeyInit of {ALICE} is available"


@pytest.fixture
def alice(app_server, tmp_path, cheap_keystore):  # noqa: F811
    home = registered_home(app_server, tmp_path, tokens=4)
    assert keyclient(home, "register", ALICE, "--yes").exit_code == 0
    return home


@pytest.fixture
def bob(app_server, tmp_path):
    """A sender: knows the server, holds no keys and no tokens."""
    home = tmp_path / "bob"
    keyclient(home, "server", "add", app_server.url)
    return home


def private_keys(home):
    keystore = Keystore(str(home / "keys"), "correct horse")
    return {bytes(keystore.get_private_key(name).public_key): name
            for name in keystore.names() if ".pf." in name}


def fetch(bob):
    result = keyclient(bob, "keyinit", "fetch", ALICE)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_published_keyinits_are_fetched_once_each_and_open(alice, bob, app_server):
    result = keyclient(alice, "keyinit", "publish", ALICE, "-n", "3")
    assert result.exit_code == 0, result.output
    assert f"published 3 KeyInit(s) of {ALICE} to {app_server.url}" in result.output
    mine = private_keys(alice)
    assert len(mine) == 3
    seen = []
    for _ in range(3):
        fetched = fetch(bob)
        assert fetched["identity"] == ALICE and fetched["fallback"] is False
        [pfkey] = fetched["sessionanchor"]["pfkeys"]
        seen.append(b64decode(pfkey["pubkey"]))
    assert sorted(seen) == sorted(mine)            # each once, and Alice holds every key
    empty = keyclient(bob, "keyinit", "fetch", ALICE)
    assert empty.exit_code == 1 and NONE_LEFT in empty.output
    assert not (bob / "keys").exists()            # a sender needs no keystore


def test_fallback_keyinit_is_handed_out_again(alice, bob):
    assert keyclient(alice, "keyinit", "publish", ALICE, "-n", "1", "--fallback").exit_code == 0
    first, second = fetch(bob), fetch(bob)
    assert first == second and first["fallback"] is True


def test_msgcounts_keep_growing_even_when_local_state_is_lost(alice, bob, app_server):
    assert keyclient(alice, "keyinit", "publish", ALICE, "-n", "2").exit_code == 0
    with sqlite3.connect(alice / "state.sqlite") as conn:
        conn.execute("DELETE FROM keyinit_msgcounts")
    result = keyclient(alice, "keyinit", "publish", ALICE, "-n", "2")
    assert result.exit_code == 0, result.output
    counts = [fetch(bob)["msgcount"] for _ in range(4)]
    assert len(set(counts)) == 4


def test_status_shows_the_owner_what_is_left(alice, bob):
    assert keyclient(alice, "keyinit", "publish", ALICE, "-n", "3").exit_code == 0
    assert keyclient(alice, "keyinit", "publish", ALICE, "-n", "1", "--fallback").exit_code == 0
    fetch(bob)
    result = keyclient(alice, "keyinit", "status", ALICE)
    assert result.exit_code == 0, result.output
    assert (f"{ALICE}: 2 KeyInit(s) and 1 fallback KeyInit(s) left on example.org, the "
            "first expires ") in result.output
    keyclient(alice, "keyinit", "flush", ALICE)
    assert (f"{ALICE}: 0 KeyInit(s) and 0 fallback KeyInit(s) left on example.org\n"
            == keyclient(alice, "keyinit", "status", ALICE).stdout)


def test_status_needs_the_owner_and_published_keyinits(alice, bob):
    never = keyclient(alice, "keyinit", "status", ALICE)
    assert never.exit_code == 1 and "the server refused: no KeyInits" in never.output
    keyclient(alice, "keyinit", "publish", ALICE, "-n", "1")
    stranger = keyclient(bob, "keyinit", "status", ALICE)
    assert stranger.exit_code == 1 and f"no signing key of {ALICE} on this machine" in \
        stranger.output


def test_flush_deletes_them(alice, bob):
    keyclient(alice, "keyinit", "publish", ALICE, "-n", "2")
    result = keyclient(alice, "keyinit", "flush", ALICE)
    assert result.exit_code == 0 and f"flushed 2 KeyInit(s) of {ALICE}" in result.output
    assert NONE_LEFT in keyclient(bob, "keyinit", "fetch", ALICE).output


def test_an_update_republishes_the_keyinits_under_the_new_key(alice, bob, app_server):
    """The server deletes the KeyInits of a replaced sigkey with the update (§9):
    as many of each kind are published under the new one, in one batch."""
    keyclient(alice, "keyinit", "publish", ALICE, "-n", "2")
    keyclient(alice, "keyinit", "publish", ALICE, "-n", "1", "--fallback")
    keyclient(alice, "tokens", "add", *[t.split('"')[1] for t in app_server.mint(1)])
    result = keyclient(alice, "update", ALICE)
    assert result.exit_code == 0, result.output
    assert ("published 3 KeyInit(s) (1 fallback) under the new key in place of the 2 and 1 "
            "fallback of the old one") in result.stdout
    status = json.loads(keyclient(alice, "keyinit", "status", ALICE, "--json").stdout)
    assert (status["stored"], status["fallback"]) == (2, 1)    # the old ones went
    # One token for the update, one for the batch.
    assert json.loads(keyclient(alice, "tokens", "list", "--json").stdout)[
        "example.org"]["available"] == 0
    # Each opened with the new sigkey from the chain.
    assert [fetch(bob)["fallback"] for _ in range(3)] == [False, False, True]


def test_an_update_without_a_token_for_the_keyinits_warns(alice, bob):
    keyclient(alice, "keyinit", "publish", ALICE, "-n", "2")
    with sqlite3.connect(alice / "wallet.sqlite") as conn:   # one token left: the update's
        conn.execute("UPDATE tokens SET state = 'spent' WHERE rowid IN (SELECT rowid FROM"
                     " tokens WHERE state = 'available' LIMIT 1)")
    result = keyclient(alice, "update", ALICE)
    assert result.exit_code == 0, result.output
    assert f"updated {ALICE} at position 2 with a new signing key\n" in result.stdout
    assert ("Warning: the server deleted the 2 KeyInit(s) of the old key and none could be "
            "published in their place (no tokens for example.org left") in result.stderr
    assert result.stderr.rstrip().endswith(
        f"senders cannot reach {ALICE} until 'keyclient keyinit publish {ALICE}'")
    assert NONE_LEFT in keyclient(bob, "keyinit", "fetch", ALICE).output


def test_refused_uploads_keep_no_private_keys(alice, app_server, tmp_path):
    too_many = keyclient(alice, "keyinit", "publish", ALICE, "-n", "51")
    assert too_many.exit_code == 1 and "1 to 50 KeyInits per request" in too_many.output
    with sqlite3.connect(alice / "wallet.sqlite") as conn:
        conn.execute("UPDATE tokens SET state = 'spent'")
    broke = keyclient(alice, "keyinit", "publish", ALICE)
    assert broke.exit_code == 1 and "no tokens for example.org left" in broke.output
    with sqlite3.connect(alice / "wallet.sqlite") as conn:   # a token the server spent
        conn.execute("UPDATE tokens SET state = 'available'")
    refused = keyclient(alice, "keyinit", "publish", ALICE, "-n", "2")
    assert refused.exit_code == 1 and "(it takes another token)" in refused.output
    assert private_keys(alice) == {}


def test_a_redirected_upload_leaves_the_token_unknown(alice, app_server):
    """A 3xx to AddKeyInit is an unknown outcome, as a 5xx is: the token is not
    put back as available (the server may have stored the batch and spent it)."""
    from test_accounts import redirecting

    fetcher = redirecting(app_server, 302)
    result = keyclient(alice, "keyinit", "publish", ALICE, "-n", "2")
    assert result.exit_code == 1 and "/v1/keyinits answered HTTP 302: " in result.output
    assert "2 available, 1 spent, 1 unknown" in keyclient(alice, "tokens", "list").output
    assert fetcher.errors == []


def test_unknown_and_unpublished_identities(alice, bob):
    missing = keyclient(bob, "keyinit", "fetch", "nobody@example.org")
    assert missing.exit_code == 1 and "not on example.org's chain" in missing.output
    none = keyclient(bob, "keyinit", "fetch", ALICE)
    assert none.exit_code == 1 and NONE_LEFT in none.output


def tamper_anchor(keyinit):
    keyinit["contents"]["sessionanchorhash"] = keyinit["contents"]["sigkeyhash"]


def other_identity(keyinit):
    """A valid KeyInit of someone else, passed off as Alice's."""
    contents = keyinit["contents"]
    anchor = build_session_anchor([KeyEntry(X25519, bytes(nacl.public.PrivateKey.generate()
                                                          .public_key))])
    keyinit.clear()
    keyinit.update(build_keyinit(nacl.signing.SigningKey.generate(), msgcount=1,
                                 not_before_ts=contents["not_before_ts"],
                                 not_after_ts=contents["not_after_ts"], fallback=False,
                                 repouri=contents["repouri"], anchor=anchor))


@pytest.mark.parametrize("how, message", [
    (tamper_anchor, "signature does not verify"),
    (other_identity, "another sigkey"),
])
def test_a_tampered_keyinit_is_refused(alice, bob, monkeypatch, how, message):
    keyclient(alice, "keyinit", "publish", ALICE, "-n", "1")
    original = KeyserverAPI.fetch_keyinit

    def lying(self, key_hash):
        keyinit = original(self, key_hash)
        how(keyinit)
        return keyinit

    monkeypatch.setattr(KeyserverAPI, "fetch_keyinit", lying)
    result = keyclient(bob, "keyinit", "fetch", ALICE)
    assert result.exit_code == 1 and message in result.output


def test_a_keyinit_for_an_unlisted_repository_is_refused(alice, bob, monkeypatch, app_server):
    """Signed by Alice, but made for a repository her UIDMessage does not name (the
    server only takes KeyInits for its own URIs, so the test serves one itself)."""
    keyclient(alice, "keyinit", "publish", ALICE, "-n", "1")
    original = KeyserverAPI.fetch_keyinit

    def resigned(self, key_hash):
        contents = original(self, key_hash)["contents"]
        sigkey = Keystore(str(alice / "keys"), "correct horse").get_signing_key(
            "alice_at_example.org.sigkey")
        pfkey = nacl.public.PrivateKey.generate().public_key
        return build_keyinit(sigkey, msgcount=contents["msgcount"],
                             not_before_ts=contents["not_before_ts"],
                             not_after_ts=contents["not_after_ts"], fallback=False,
                             repouri="https://elsewhere.example",
                             anchor=build_session_anchor([KeyEntry(X25519, bytes(pfkey))]))

    monkeypatch.setattr(KeyserverAPI, "fetch_keyinit", resigned)
    result = keyclient(bob, "keyinit", "fetch", ALICE)
    assert result.exit_code == 1 and "a repository alice@example.org does not list" in \
        result.output


def test_a_sender_skips_a_repository_it_must_not_contact_and_says_so(tmp_path, monkeypatch,
                                                                     cheap_keystore):
    """The server vouches for a repository reached over plain http: Alice's UIDMessage
    may list it, but a sender does not send it the sigkeyhash in the clear (§9)."""
    plain = "http://keyinits.example.net"
    monkeypatch.setenv("KEYSERVER_ALLOWED_REPOURIS", json.dumps([plain]))
    server = serve_in_process(monkeypatch, tmp_path / "app")
    alice = registered_home(server, tmp_path, tokens=2)
    assert keyclient(alice, "register", ALICE, "--yes").exit_code == 0
    assert keyclient(alice, "keyinit", "publish", ALICE, "-n", "1").exit_code == 0
    bob = tmp_path / "bob"
    keyclient(bob, "server", "add", server.url)
    result = keyclient(bob, "keyinit", "fetch", ALICE)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["repouri"] == server.url
    assert (f"skipped {plain}: {plain!r} is neither https nor http to a loopback address"
            in result.stderr)
    none_left = keyclient(bob, "keyinit", "fetch", ALICE)
    assert none_left.exit_code == 1 and f"(skipped: {plain}: " in none_left.output

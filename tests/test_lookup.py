"""Lookup (§7.3, §11.3): found on the verified chain, every reply checked against
it and signed by the server key of its position, the sequence re-verified; a
server that lies about a reply is caught."""

import copy

import pytest

from client.lookup import lookup
from client.protocol.encoding import b64decode, b64encode
from client.protocol.errors import VerificationError
from client.session import ServerSession, sync_chain
from client.store.home import Home
from simulator import TamperFetcher
from tamper_proxy import replies_changed


@pytest.fixture
def synced(app_server, tmp_path):
    """The server's chain, verified (not its keys: ``lookup`` finds them), and the
    session's replies (fetched in bundles) to look it up with."""
    def sync(fetcher=None):
        session = ServerSession(Home(str(tmp_path / "home")), "example.org", app_server.url,
                                fetcher=fetcher)
        sync_chain(session.api, session.chain)
        return session.replies, session.search, session.keyring
    return sync


def test_lookup_finds_current_keys(users_app, synced):
    reply = users_app.register("alice@example.org")
    api, search, keyring = synced()
    result = lookup(api, search, "example.org", "alice@example.org", keyring)
    assert [found.pos for found in result.history] == [reply["entry"]["hashchain_pos"]]
    assert result.message.identity == "alice@example.org"
    assert result.is_current(result.history[0].ts)
    assert lookup(api, search, "example.org", "nobody@example.org", keyring) is None


def other_position(reply):
    reply["entry"]["hashchain_pos"] += 1


def bad_signature(reply):
    sigs = reply["signatures"]["example.org"]
    key_id = next(iter(sigs))
    raw = bytearray(b64decode(sigs[key_id]))
    raw[0] ^= 1
    sigs[key_id] = b64encode(bytes(raw))


def other_key(reply):
    import nacl.signing

    from client.protocol.signedjson import sign_json

    unsigned = {k: v for k, v in reply.items() if k != "signatures"}
    reply.clear()
    reply.update(sign_json(unsigned, "example.org", "ed25519:evil",
                           nacl.signing.SigningKey.generate()))


def swapped_message(reply):
    encrypted = bytearray(b64decode(reply["entry"]["uid_message_encrypted"]))
    encrypted[-1] ^= 1
    reply["entry"]["uid_message_encrypted"] = b64encode(bytes(encrypted))


@pytest.mark.parametrize("how", [other_position, bad_signature, other_key, swapped_message])
def test_a_lying_reply_is_caught(app_server, users_app, synced, how):
    users_app.register("alice@example.org")
    tampering = TamperFetcher(app_server.app, app_server.url)
    tampering.attack = replies_changed(how)
    api, search, keyring = synced(tampering)
    with pytest.raises(VerificationError):
        lookup(api, search, "example.org", "alice@example.org", keyring)
    assert tampering.errors == []
    assert any(path.startswith("/v1/uids/bundle/") for _, path in tampering.seen)


def test_the_chain_must_start_with_the_server(synced):
    api, search, keyring = synced()
    original = copy.copy(search.search)
    search.search = lambda identity: [] if identity.startswith("keyserver@") else original(identity)
    with pytest.raises(VerificationError, match="does not start with"):
        lookup(api, search, "example.org", "alice@example.org", keyring)

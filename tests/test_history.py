"""An identity's history verified without I/O (``client.trust.history``, §7.3,
§11.3): each reply names its entry and position, is signed by the key the chain
gives that position, opens to a message of this identity, and the sequence
follows §4."""

import dataclasses
import re

import nacl.signing
import pytest

from client.protocol.errors import VerificationError
from client.protocol.hashchain import ZERO_HASH, format_entry
from client.protocol.keys import ed25519_entry
from client.protocol.signedjson import sign_json
from client.protocol.encoding import canonical_json
from client.protocol.uidmessage import (build_uid_content, encrypt_uid_message, seal,
                                        sign_uid_content)
from client.protocol.note import VerifierKey
from client.protocol.uidmessage import ServerPreferences
from client.protocol.wire import ReplyEntry, format_uid_message_reply, parse_uid_message_reply
from client.trust.history import Match, open_reply, verify_history, verify_server_keys

SERVER = "example.org"
OWN = "keyserver@example.org"
ALICE = "alice@example.org"
DAY_MS = 24 * 3600 * 1000
T0 = 1_800_000_000_000
#: preferences.server of the server's own messages (§4): only they carry it.
POLICY = ServerPreferences(VerifierKey(f"{SERVER}/keyserver", bytes(32)), (),
                           reclaim_grace_ms=30 * DAY_MS, max_uid_lifetime_ms=365 * DAY_MS)
SERVER_KEY = nacl.signing.SigningKey(bytes([7]) * 32)


class AnyTime:
    """A ``KeyValidity`` that takes every key at every time: these tests are about
    the chain's part of §11.3 (``test_keydocs`` has the documents')."""

    def check_valid(self, pubkey, ts, keys, previous, what):
        pass


ANY_TIME = AnyTime()


def match(pos, identity, *, ts=T0, sigkey=None, msgcount=0, previous=None,
          server_key=SERVER_KEY, reply_pos=None, policy=POLICY, entry_for=None):
    """A chain entry of ``identity`` at ``pos`` and the server's signed reply for it
    (``policy`` is the preferences.server of the server's own messages; ``entry_for``
    files the message under another identity's entry)."""
    sigkey = sigkey or nacl.signing.SigningKey.generate()
    content = build_uid_content(identity, ed25519_entry(sigkey), msgcount=msgcount,
                                not_before_ts=ts, not_after_ts=ts + DAY_MS, lastentry=ZERO_HASH,
                                server=policy if identity == OWN else None)
    message = sign_uid_content(content, sigkey, previous_sigkey=previous)
    uid_hash, encrypted = encrypt_uid_message(message)
    entry = format_entry(bytes(32), pos.to_bytes(8, "big"), entry_for or identity, uid_hash)
    reply = format_uid_message_reply(ReplyEntry(encrypted, entry,
                                                pos if reply_pos is None else reply_pos, ts))
    reply = parse_uid_message_reply(sign_json(reply, SERVER, "ed25519:a", server_key))
    return Match(pos, entry, uid_hash, reply)


def server_record():
    return verify_server_keys(SERVER, [match(0, OWN, sigkey=SERVER_KEY)], ANY_TIME)


def test_the_server_keys_come_from_its_own_entries():
    [key] = server_record().keys
    assert (key.pos, key.ts, key.pubkey) == (0, T0, bytes(SERVER_KEY.verify_key))


def test_a_chain_without_the_server_at_0_is_refused():
    with pytest.raises(VerificationError, match=f"the chain does not start with {OWN}"):
        verify_server_keys(SERVER, [], ANY_TIME)


def test_a_history_verifies():
    first_key = nacl.signing.SigningKey.generate()
    matches = [match(1, ALICE, sigkey=first_key),
               match(4, ALICE, ts=T0 + 1, msgcount=1, previous=first_key)]
    result = verify_history(ALICE, SERVER, matches, server_record(), ANY_TIME)
    assert [found.pos for found in result.history] == [1, 4]
    assert result.message.msgcount == 1 and result.latest.msgcount == 1
    assert result.history[1].reply is matches[1].reply


def test_no_matches_is_not_found():
    assert verify_history(ALICE, SERVER, [], server_record(), ANY_TIME) is None


def resealed(found):
    """Another validly signed message of alice, sealed under this entry's UIDHash:
    the MAC opens, only the hash check can tell (§7.3)."""
    sigkey = nacl.signing.SigningKey.generate()
    other = sign_uid_content(build_uid_content(ALICE, ed25519_entry(sigkey), msgcount=0,
                                               not_before_ts=T0, not_after_ts=T0 + DAY_MS,
                                               lastentry=ZERO_HASH), sigkey)
    encrypted = seal(canonical_json(other), found.uid_hash)
    reply = format_uid_message_reply(ReplyEntry(encrypted, found.entry, found.pos, T0))
    return dataclasses.replace(found, reply=parse_uid_message_reply(
        sign_json(reply, SERVER, "ed25519:a", SERVER_KEY)))


def other_entry(found):
    return dataclasses.replace(found, entry=match(1, ALICE).entry)


REJECTS = {
    "other-position": (lambda found: match(1, ALICE, reply_pos=2),
                       "the reply for position 1 names another entry"),
    "other-entry": (other_entry, "the reply for position 1 names another entry"),
    "unknown-signer": (lambda found: match(1, ALICE, server_key=nacl.signing.SigningKey
                                           .generate()),
                       "the reply for position 1 is not signed by the server key valid at "
                       "position 1"),
    "wrong-uid-hash": (lambda found: dataclasses.replace(found, uid_hash=bytes(32)),
                       "encrypted UIDMessage does not belong to this UIDHash"),
    "resealed-under-the-uid-hash": (resealed, "UIDMessage does not hash to its UIDHash"),
    "another-identity": (lambda found: match(1, "bob@example.org"),
                         "the message at position 1 is for bob@example.org"),
    "update-by-a-stranger": (lambda found: match(1, ALICE, msgcount=1),
                             "alice@example.org, message 0 (msgcount 1)"),
}


@pytest.mark.parametrize("how, error", REJECTS.values(), ids=REJECTS.keys())
def test_a_lying_history_is_refused(how, error):
    with pytest.raises(VerificationError, match=re.escape(error)):
        verify_history(ALICE, SERVER, [how(match(1, ALICE))], server_record(), ANY_TIME)


@pytest.mark.parametrize("reply, error", [
    (lambda: match(5, "bob@example.org").reply,
     "the entry at position 5 is not one of alice@example.org"),
    (lambda: match(5, "bob@example.org", entry_for=ALICE).reply,
     "the message at position 5 is for bob@example.org"),
], ids=["entry-of-another", "message-of-another"])
def test_a_reply_taken_on_its_own_must_open_to_the_identity(reply, error):
    """``lookup --light`` checks one reply without the chain (``open_reply``): what it
    refuses names the position the server gave, for the user and as evidence."""
    assert open_reply(ALICE, SERVER, match(5, ALICE).reply).pos == 5
    with pytest.raises(VerificationError, match=re.escape(error)):
        open_reply(ALICE, SERVER, reply())


def test_a_server_key_that_signs_its_own_installation_needs_the_previous_key():
    """keyserver@ updates form a signed sequence like anyone's (§7.2, §11.2): an entry
    that installs a new server key, signed only by that new key, is refused."""
    stranger = nacl.signing.SigningKey.generate()
    installs = match(1, OWN, ts=T0 + 1, msgcount=1, sigkey=stranger, previous=stranger,
                     server_key=stranger)
    with pytest.raises(VerificationError, match=re.escape(f"{OWN}, message 1 (msgcount 1)")):
        verify_server_keys(SERVER, [match(0, OWN, sigkey=SERVER_KEY), installs], ANY_TIME)


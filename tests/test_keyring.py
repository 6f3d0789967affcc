"""The server's keys as the chain records them (``client.trust.keyring``, §11.2,
§11.3): which key's signature counts for an object at a position; whether it was
valid at the object's time is the ``KeyValidity``'s (here one that records what
it was asked; ``test_keydocs`` has the documents')."""

import dataclasses

import nacl.signing
import pytest

from client.protocol.note import VerifierKey, format_verifier_key

from client.protocol.encoding import b64encode
from client.protocol.errors import InvalidSignature, VerificationError
from client.protocol.signedjson import sign_json
from client.protocol.uidrules import Limits
from client.protocol.wire import format_limits, parse_capabilities
from client.trust.keyring import (ServerKey, check_capabilities, check_self_signed,
                                  check_server_signature, signers_at)

SERVER = "example.org"
OLD, NEW, OTHER = (nacl.signing.SigningKey(bytes([n]) * 32) for n in (1, 2, 3))
ROTATED_TS = 10_000_000
HOUR_MS = 3600 * 1000
KEYS = [ServerKey(0, 1000, bytes(OLD.verify_key)), ServerKey(5, ROTATED_TS, bytes(NEW.verify_key))]


class Asked:
    """A ``KeyValidity`` that takes every key and records what it was asked."""

    def __init__(self):
        self.asked = []

    def check_valid(self, pubkey, ts, keys, previous, what):
        self.asked.append((pubkey, ts, previous))


def signed(key, ts=ROTATED_TS, key_id="ed25519:a"):
    return sign_json({"ts": ts}, SERVER, key_id, key)


@pytest.mark.parametrize("key, pos, previous", [
    (OLD, 0, False), (OLD, 4, False),     # before the rotation
    (NEW, 5, False), (NEW, 9, False),     # the rotation installs NEW
    (OLD, 5, True), (OLD, 9, True),       # the previous key: the document bounds it
], ids=["old-at-0", "old-before-rotation", "new-at-rotation", "new-later", "old-at-rotation",
        "old-later"])
def test_the_key_of_the_position_signs(key, pos, previous):
    validity = Asked()
    ts = ROTATED_TS + HOUR_MS
    check_server_signature(signed(key, ts), ts, SERVER, KEYS, pos, "the object", validity)
    assert validity.asked == [(bytes(key.verify_key), ts, previous)]


@pytest.mark.parametrize("key, pos", [
    (NEW, 4),                           # not yet installed
    (OTHER, 9),                         # never the server's
], ids=["new-not-yet-valid", "unknown"])
def test_any_other_key_is_refused(key, pos):
    with pytest.raises(VerificationError,
                       match=f"^the object is not signed by the server key valid at position {pos}$"):
        check_server_signature(signed(key), ROTATED_TS, SERVER, KEYS, pos, "the object", Asked())


def test_the_validity_decides_after_the_chain():
    class Expired:
        def check_valid(self, pubkey, ts, keys, previous, what):
            raise VerificationError(f"{what}: expired")

    with pytest.raises(VerificationError, match="the object: expired"):
        check_server_signature(signed(OLD), ROTATED_TS, SERVER, KEYS, 9, "the object", Expired())


def test_a_renewal_keeps_the_previous_distinct_key():
    """§11.3 revision 2: renewals repeat the sigkey, so the key before the last entry
    may be the same one; the overlap names the previous *distinct* key."""
    old, new = bytes(OLD.verify_key), bytes(NEW.verify_key)
    renewed = [ServerKey(0, 0, old), ServerKey(3, 1, old), ServerKey(5, 2, new),
               ServerKey(8, 3, new)]
    assert signers_at(renewed, 2) == (old, None)
    assert signers_at(renewed, 4) == (old, None)
    assert signers_at(renewed, 9) == (new, old)
    validity = Asked()
    check_server_signature(signed(OLD), ROTATED_TS, SERVER, renewed, 9, "x", validity)
    assert validity.asked == [(old, ROTATED_TS, True)]


def test_no_key_before_the_first_server_entry():
    with pytest.raises(VerificationError, match="no server key on the chain before position 3"):
        check_server_signature(signed(OLD), 0, SERVER, [ServerKey(4, 0, b"k")], 3, "x", Asked())


def capabilities(listed, signer, key_id="ed25519:a"):
    body = {"server_name": SERVER, "version": "1", "methods": [], "domains": [SERVER],
            "keyrepository_uris": [], "keyinitrepository_uris": [], "hashchain_uris": [],
            "hashchain_head": {"pos": 0, "entry": b64encode(bytes(153))},
            "sigpubkeys": {key_id: b64encode(bytes(listed.verify_key))}, "token_keys": [],
            "token_prices": {}, "limits": format_limits(Limits(1, 2, 3)),
            "log_vkey": format_verifier_key(VerifierKey(f"{SERVER}/keyserver", bytes(32))),
            "ts": ROTATED_TS}
    return parse_capabilities(sign_json(body, SERVER, key_id, signer))


def test_self_signed_capabilities():
    check_self_signed(capabilities(OTHER, OTHER))
    with pytest.raises(InvalidSignature):
        check_self_signed(capabilities(OTHER, NEW))
    unlisted = dataclasses.replace(capabilities(OTHER, OTHER), sigpubkeys={})
    with pytest.raises(VerificationError, match="not signed by a key they list"):
        check_self_signed(unlisted)


def test_capabilities_count_only_signed_by_the_chains_key():
    check_capabilities(capabilities(NEW, NEW), SERVER, KEYS, 9, Asked())
    with pytest.raises(VerificationError, match="the capabilities document is not signed by "
                       "the server key valid at position 9"):
        check_capabilities(capabilities(OTHER, OTHER), SERVER, KEYS, 9, Asked())

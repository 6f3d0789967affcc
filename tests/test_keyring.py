"""The server's keys as the chain records them (``client.trust.keyring``, §11.2,
§11.3): which key's signature counts for an object at a position and time."""

import dataclasses

import nacl.signing
import pytest

from client.protocol.note import VerifierKey, format_verifier_key

from client.protocol.encoding import b64encode
from client.protocol.errors import InvalidSignature, VerificationError
from client.protocol.signedjson import sign_json
from client.protocol.uidrules import Limits
from client.protocol.wire import format_limits, parse_capabilities
from client.trust.keyring import (ROTATION_OVERLAP_MS, ServerKey, check_capabilities,
                                  check_self_signed, check_server_signature)

SERVER = "example.org"
OLD, NEW, OTHER = (nacl.signing.SigningKey(bytes([n]) * 32) for n in (1, 2, 3))
ROTATED_TS = 10_000_000
KEYS = [ServerKey(0, 1000, bytes(OLD.verify_key)), ServerKey(5, ROTATED_TS, bytes(NEW.verify_key))]


def signed(key, ts=ROTATED_TS, key_id="ed25519:a"):
    return sign_json({"ts": ts}, SERVER, key_id, key)


@pytest.mark.parametrize("key, pos, ts", [
    (OLD, 0, 1000), (OLD, 4, ROTATED_TS + 5 * ROTATION_OVERLAP_MS),   # before the rotation
    (NEW, 5, ROTATED_TS), (NEW, 9, ROTATED_TS + 5 * ROTATION_OVERLAP_MS),
    (OLD, 5, ROTATED_TS + ROTATION_OVERLAP_MS - 1),                  # within the overlap
], ids=["old-at-0", "old-before-rotation", "new-at-rotation", "new-later", "old-in-overlap"])
def test_the_key_of_the_position_signs(key, pos, ts):
    check_server_signature(signed(key, ts), ts, SERVER, KEYS, pos, "the object")


@pytest.mark.parametrize("key, pos, ts", [
    (OLD, 5, ROTATED_TS + ROTATION_OVERLAP_MS),     # the overlap is over
    (NEW, 4, ROTATED_TS),                           # not yet installed
    (OTHER, 9, ROTATED_TS),                         # never the server's
], ids=["old-expired", "new-not-yet-valid", "unknown"])
def test_any_other_key_is_refused(key, pos, ts):
    with pytest.raises(VerificationError,
                       match=f"^the object is not signed by the server key valid at position {pos}$"):
        check_server_signature(signed(key, ts), ts, SERVER, KEYS, pos, "the object")


def test_no_key_before_the_first_server_entry():
    with pytest.raises(VerificationError, match="no server key on the chain before position 3"):
        check_server_signature(signed(OLD), 0, SERVER, [ServerKey(4, 0, b"k")], 3, "x")


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
    check_capabilities(capabilities(NEW, NEW), SERVER, KEYS, 9)
    with pytest.raises(VerificationError, match="the capabilities document is not signed by "
                       "the server key valid at position 9"):
        check_capabilities(capabilities(OTHER, OTHER), SERVER, KEYS, 9)

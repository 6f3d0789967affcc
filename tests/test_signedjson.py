"""Signed JSON, Matrix convention (§1)."""

import copy

import nacl.signing
import pytest

from client.protocol.encoding import b64encode
from client.protocol.errors import InvalidSignature
from client.protocol.signedjson import sign_json, verify_signed_json


@pytest.fixture
def case(vectors):
    return vectors["signed_json"]


@pytest.fixture
def key(case):
    return nacl.signing.SigningKey(bytes.fromhex(case["seed"]))


def test_public_key_vector(case, key):
    assert b64encode(bytes(key.verify_key)) == case["public_key_b64"]


def test_signature_vector(case, key):
    obj = {k: v for k, v in case["signed_object"].items() if k != "signatures"}
    assert sign_json(obj, case["signer"], case["key_id"], key) == case["signed_object"]


def test_verify_vector_and_ignores_unsigned(case, key):
    obj = copy.deepcopy(case["signed_object"])
    obj["unsigned"] = {"age": 5}
    verify_signed_json(obj, case["signer"], case["key_id"], bytes(key.verify_key))


@pytest.mark.parametrize("tamper", ["content", "signature", "signer", "key_id", "missing"])
def test_verify_rejects(case, key, tamper):
    obj = copy.deepcopy(case["signed_object"])
    signer, key_id = case["signer"], case["key_id"]
    if tamper == "content":
        obj["ts"] += 1
    elif tamper == "signature":
        sig = obj["signatures"][signer][key_id]
        obj["signatures"][signer][key_id] = ("B" if sig[0] == "A" else "A") + sig[1:]
    elif tamper == "signer":
        signer = "other.org"
    elif tamper == "key_id":
        key_id = "ed25519:b"
    else:
        del obj["signatures"]
    with pytest.raises(InvalidSignature):
        verify_signed_json(obj, signer, key_id, bytes(key.verify_key))


@pytest.mark.parametrize("signature, why", [
    ("not base64!", "signature ed25519:a: not unpadded base64"),
    (None, "signature ed25519:a: not unpadded base64"),
    (b64encode(bytes(63)), "signature ed25519:a: must encode 64 bytes, not 63"),
])
def test_a_malformed_signature_is_an_invalid_signature_saying_why(case, key, signature, why):
    """What a hostile server puts where a signature goes is refused as a bad signature,
    never a crash, and the error says what is wrong with it."""
    obj = copy.deepcopy(case["signed_object"])
    obj["signatures"][case["signer"]][case["key_id"]] = signature
    with pytest.raises(InvalidSignature, match=why):
        verify_signed_json(obj, case["signer"], case["key_id"], bytes(key.verify_key))


def test_wrong_key_rejected(case):
    other = nacl.signing.SigningKey.generate()
    with pytest.raises(InvalidSignature):
        verify_signed_json(case["signed_object"], case["signer"], case["key_id"],
                           bytes(other.verify_key))


def test_second_signature_keeps_first(case, key):
    other = nacl.signing.SigningKey.generate()
    twice = sign_json(case["signed_object"], "notary.org", "ed25519:n", other)
    verify_signed_json(twice, case["signer"], case["key_id"], bytes(key.verify_key))
    verify_signed_json(twice, "notary.org", "ed25519:n", bytes(other.verify_key))

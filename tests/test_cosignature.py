"""Cosignatures and the witness exchange (§8.1, C2SP tlog-cosignature and
tlog-witness), pure: the spec's ``cosignature`` vector byte for byte, and the
strict parsing of ``add-checkpoint`` bodies and 409 size answers."""

import nacl.signing
import pytest

from client.protocol.checkpoint import Signature, parse_note, parse_signature_lines
from client.protocol.cosignature import (AddCheckpoint, check_cosignature, cosign,
                                         cosigned_message, format_add_checkpoint, format_size,
                                         parse_add_checkpoint, parse_size, witness_name,
                                         witness_vkey)
from client.protocol.errors import BadRequest, VerificationError
from client.protocol.note import ALG_COSIGNATURE, format_verifier_key, parse_verifier_key
from conftest import cosigners, with_cosignatures


def vector_witness(vectors):
    vector = vectors["cosignature"]
    key = nacl.signing.SigningKey(bytes.fromhex(vector["seed"]))
    return vector, key, witness_vkey(vector["witness_name"], key)


def test_the_cosignature_vector(vectors):
    vector, key, vkey = vector_witness(vectors)
    assert vkey.pubkey.hex() == vector["public_key"]
    assert vkey.key_hash.hex() == vector["key_id"]
    note = parse_note(vectors["checkpoint"]["note"])
    assert cosigned_message(note.body, vector["timestamp"]).decode() \
        == vector["signed_message"]
    assert cosign(note.body, vkey, key, vector["timestamp"]).line() == vector["line"]
    cosigned = with_cosignatures(note, parse_signature_lines(vector["line"]))
    assert cosigned.text() == vector["cosigned_note"]
    assert check_cosignature(parse_note(vector["cosigned_note"]), vkey) == vector["timestamp"]


def test_a_witness_verifier_key_round_trips_with_its_own_type(vectors):
    _, _, vkey = vector_witness(vectors)
    text = format_verifier_key(vkey)
    assert text.startswith(f"{vkey.name}+{vkey.key_hash.hex()}+BC")   # 0x04
    assert parse_verifier_key(text, alg=ALG_COSIGNATURE) == vkey
    with pytest.raises(Exception, match="0x01"):
        parse_verifier_key(text)        # not a log key


def test_a_cosignature_by_another_key_or_over_another_time_is_refused(vectors):
    vector, key, vkey = vector_witness(vectors)
    cosigned = parse_note(vector["cosigned_note"])
    impostor = witness_vkey(vector["witness_name"], nacl.signing.SigningKey.generate())
    with pytest.raises(VerificationError, match="no valid cosignature"):
        check_cosignature(cosigned, impostor)
    forged = cosign(cosigned.body, vkey, key, vector["timestamp"])
    moved = type(forged)(forged.name, forged.key_hash,
                         (vector["timestamp"] + 1).to_bytes(8, "big") + forged.signature[8:])
    note = parse_note(vectors["checkpoint"]["note"])
    with pytest.raises(VerificationError):
        check_cosignature(with_cosignatures(note, [moved]), vkey)
    # The log's own signature line is not a cosignature, whatever its name.
    assert cosigners(note, [vkey, impostor]) == {}
    assert cosigners(cosigned, [vkey, impostor]) == {vkey.name: vector["timestamp"]}
    # A witness that did not cosign does not hide the ones listed after it.
    assert cosigners(cosigned, [impostor, vkey]) == {vkey.name: vector["timestamp"]}


def test_cosignature_timestamps_are_unsigned_64_bit(vectors):
    _, key, vkey = vector_witness(vectors)
    note = parse_note(vectors["checkpoint"]["note"])
    for timestamp in (0, 2**63, 2**64 - 1):
        cosigned = with_cosignatures(note, [cosign(note.body, vkey, key, timestamp)])
        assert check_cosignature(cosigned, vkey) == timestamp


@pytest.mark.parametrize("length", [0, 4, 64, 73])
def test_a_line_of_the_witness_key_but_not_72_bytes_is_no_cosignature(vectors, length):
    # A hostile note may carry anything under the witness's name and key hash.
    _, key, vkey = vector_witness(vectors)
    note = parse_note(vectors["checkpoint"]["note"])
    odd = with_cosignatures(note, [Signature(vkey.name, vkey.key_hash, bytes(length))])
    with pytest.raises(VerificationError, match="no valid cosignature"):
        check_cosignature(odd, vkey)
    assert cosigners(odd, [vkey]) == {}


def test_the_witness_name_of_a_keyserver():
    assert witness_name("witness.example") == "witness.example/witness"


def test_an_add_checkpoint_body_round_trips(vectors):
    note_text = vectors["checkpoint"]["note"]
    proof = [bytes([i]) * 32 for i in range(3)]
    body = format_add_checkpoint(1, proof, note_text)
    assert body.startswith(b"old 1\nAAAA")
    assert parse_add_checkpoint(body) == AddCheckpoint(1, tuple(proof), parse_note(note_text))
    assert parse_add_checkpoint(format_add_checkpoint(0, [], note_text)).proof == ()
    # C2SP allows up to 63 proof lines (a proof between trees of up to 2^63 leaves).
    longest = [bytes([i]) * 32 for i in range(63)]
    assert parse_add_checkpoint(format_add_checkpoint(1, longest, note_text)).proof \
        == tuple(longest)


@pytest.mark.parametrize("body, message", [
    (b"old 01\n\n", "'old <size>'"),
    (b"new 1\n\n", "'old <size>'"),
    (b"old 1\n", "empty line"),
    (b"old 1\nnot-base64!\n\n", "not base64"),
    (b"old 1\nAAAA\n\n", "one hash"),
    (b"old 1\n" + b"A" * 43 + b"=\n" * 64 + b"\n", "63"),
    (b"old 0\n\nnot a note\n", "malformed"),
    (b"\xff", "UTF-8"),
])
def test_a_malformed_add_checkpoint_body_is_a_bad_request(vectors, body, message):
    if body.endswith(b"\n\n") and b"old" in body:
        body += vectors["checkpoint"]["note"].encode()
    with pytest.raises(BadRequest, match=message):
        parse_add_checkpoint(body)


def test_size_answers():
    assert format_size(12) == b"12\n"
    for size in (0, 7, 12, 2**63):
        assert parse_size(format_size(size)) == size
    # Whatever bytes a witness answers, the log gets a VerificationError, not a crash.
    for bad in (b"12", b"012\n", b"-1\n", b"x\n", b"1\xff\n", b"\xc2\xb2\n"):
        with pytest.raises(VerificationError):
            parse_size(bad)

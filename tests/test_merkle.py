"""The RFC 9162 Merkle tree and checkpoints (§8) as pure functions: the spec's
vectors, every inclusion and consistency proof of small trees checked against the
RFC's recursive definitions, and each way a proof can lie."""

import base64
import re

import nacl.signing
import pytest

from client.protocol.checkpoint import (Checkpoint, format_checkpoint, parse_note,
                                        parse_signature_lines, sign_checkpoint,
                                        verify_checkpoint)
from client.protocol.encoding import sha256
from client.protocol.errors import VerificationError
from client.protocol.merkle import (CompactTree, MemoryTree, check_consistency, check_inclusion,
                                    leaf_hash, node_hash, prove_consistency,
                                    prove_inclusion, tree_root)
from client.protocol.note import VerifierKey

ENTRIES = [bytes([i]) * 153 for i in range(20)]


def mth(leaves):
    """MTH of RFC 9162 §2.1.1, by its definition."""
    if not leaves:
        return sha256(b"")
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def test_the_root_of_the_spec_vectors_chain(vectors):
    entries = [bytes.fromhex(e["entry"]) for e in vectors["hashchain"]["entries"]]
    tree = MemoryTree(entries)
    assert tree_root(2, tree).hex() == vectors["hashchain"]["merkle_root_size_2"]
    assert tree_root(2, tree) == mth(entries)


def test_every_root_matches_the_definition():
    tree = MemoryTree(ENTRIES)
    for size in range(len(ENTRIES) + 1):
        assert tree_root(size, tree) == mth(ENTRIES[:size])


def test_a_compact_tree_has_the_root_of_the_definition_at_every_size():
    compact = CompactTree()
    assert compact.root() == mth([]) == sha256(b"")        # RFC 9162: MTH({})
    for size, entry in enumerate(ENTRIES, 1):
        compact.append(entry)
        assert compact.size == size and compact.root() == mth(ENTRIES[:size])
        # What a client keeps: one hash per bit of the size, enough to go on from.
        assert CompactTree(size, compact.hashes).root() == compact.root()
    with pytest.raises(ValueError, match="a tree of size 3 has 2 subtree roots, not 1"):
        CompactTree(3, compact.hashes[:1])


def test_every_inclusion_proof_checks_and_a_wrong_one_does_not():
    tree = MemoryTree(ENTRIES)
    for size in range(1, len(ENTRIES) + 1):
        root = tree_root(size, tree)
        for index in range(size):
            proof = prove_inclusion(index, size, tree)
            assert len(proof) <= size.bit_length()
            check_inclusion(leaf_hash(ENTRIES[index]), index, size, root, proof)
            other = (index + 1) % size
            if other != index:
                with pytest.raises(VerificationError, match="not in the tree"):
                    check_inclusion(leaf_hash(ENTRIES[other]), index, size, root, proof)


@pytest.mark.parametrize("lie, error", [
    (lambda p: p + [bytes(32)], "too long"),
    (lambda p: p[:-1], "too short"),
    (lambda p: [bytes(32)] + p[1:], "not in the tree"),
])
def test_a_forged_inclusion_proof_is_refused(lie, error):
    tree = MemoryTree(ENTRIES)
    proof = prove_inclusion(5, 13, tree)
    with pytest.raises(VerificationError, match=error):
        check_inclusion(leaf_hash(ENTRIES[5]), 5, 13, tree_root(13, tree), lie(proof))
    with pytest.raises(VerificationError, match="not in a tree of size 13"):
        check_inclusion(leaf_hash(ENTRIES[5]), 13, 13, tree_root(13, tree), proof)


def test_every_consistency_proof_checks():
    tree = MemoryTree(ENTRIES)
    for second in range(len(ENTRIES) + 1):
        for first in range(second + 1):
            proof = prove_consistency(first, second, tree)
            assert (proof == []) == (first in (0, second))
            check_consistency(first, second, tree_root(first, tree), tree_root(second, tree),
                              proof)


def test_a_rewritten_log_fails_the_consistency_check():
    tree = MemoryTree(ENTRIES)
    rewritten = MemoryTree(ENTRIES[:6] + [b"x" * 153] + ENTRIES[7:])
    for first in (7, 8, 12):      # sizes that include the rewritten entry 6
        proof = prove_consistency(first, 16, rewritten)
        with pytest.raises(VerificationError):
            check_consistency(first, 16, tree_root(first, tree), tree_root(16, rewritten),
                              proof)


def test_the_edge_cases_of_section_8():
    tree = MemoryTree(ENTRIES)
    root5 = tree_root(5, tree)
    check_consistency(0, 5, sha256(b""), root5, [])
    check_consistency(5, 5, root5, root5, [])
    with pytest.raises(VerificationError, match="two different roots"):
        check_consistency(5, 5, root5, tree_root(6, tree), [])
    with pytest.raises(VerificationError, match="is empty"):
        check_consistency(5, 5, root5, root5, [root5])
    with pytest.raises(VerificationError, match="is empty"):
        check_consistency(3, 5, tree_root(3, tree), root5, [])
    with pytest.raises(VerificationError, match="extends one of size 6"):
        check_consistency(6, 5, root5, root5, [])
    with pytest.raises(ValueError):
        prove_consistency(6, 5, tree)


def test_the_checkpoint_vector(vectors):
    vector = vectors["checkpoint"]
    signing_key = nacl.signing.SigningKey(bytes.fromhex(vector["seed"]))
    key = VerifierKey(vector["origin"], bytes(signing_key.verify_key))
    checkpoint = Checkpoint(vector["origin"], vector["tree_size"],
                            bytes.fromhex(vector["root_hash"]))
    note = sign_checkpoint(checkpoint, key, signing_key)
    assert note.text() == vector["note"]
    parsed = parse_note(vector["note"])
    assert parsed == note and verify_checkpoint(parsed, key) == checkpoint
    assert format_checkpoint(checkpoint) == vector["note"].split("\n\n")[0].encode() + b"\n"


def test_a_checkpoint_cosigned_by_a_witness_still_verifies(vectors):
    """Cosignature lines (§8.1) are other signatures of the same note."""
    vector, cosigned = vectors["checkpoint"], vectors["cosignature"]["cosigned_note"]
    signing_key = nacl.signing.SigningKey(bytes.fromhex(vector["seed"]))
    key = VerifierKey(vector["origin"], bytes(signing_key.verify_key))
    note = parse_note(cosigned)
    assert len(note.signatures) == 2 and note.text() == cosigned
    assert verify_checkpoint(note, key).tree_size == 2


@pytest.mark.parametrize("change, error", [
    (lambda t: t.replace("\n2\n", "\n02\n"), "not <origin>, <size>, <root hash>"),
    (lambda t: t.replace("\n\n", "\n"), "no signature block"),
    (lambda t: t.replace("myINuRDG", "myINuRDH"), "no valid signature"),
    (lambda t: t.replace("example.org/keyserver\n", "example.net/keyserver\n", 1),
     "not 'example.org/keyserver'"),
    (lambda t: t.replace("\u2014 ", "- "), "not a note signature line"),
    (lambda t: t.replace("27U=", "27U"), "not base64"),
])
def test_a_bad_checkpoint_is_refused(vectors, change, error):
    vector = vectors["checkpoint"]
    key = VerifierKey(vector["origin"], bytes(nacl.signing.SigningKey(
        bytes.fromhex(vector["seed"])).verify_key))
    with pytest.raises(VerificationError, match=error):
        verify_checkpoint(parse_note(change(vector["note"])), key)


ROOT = "myINuRDGUDd7XpcfnZEOo9RK2EhgsF3FFYKdqNSs27U="
SIGNED_BY = "\u2014 example.org/keyserver "


@pytest.mark.parametrize("change, error", [
    (lambda t: t.replace("example.org/keyserver\n2", "\n2", 1), "not <origin>, <size>"),
    (lambda t: t.replace(ROOT, ROOT[:-4] + "2w=="), "root hash is not 32 bytes"),
    (lambda t: t.replace(ROOT, ROOT[:-2] + "V="), "root hash is not canonical base64"),
    (lambda t: t + "\n", "not a note signature line: ''"),
    (lambda t: t.replace(SIGNED_BY, "\u2014  "), "not a note signature line"),
    (lambda t: t.replace(SIGNED_BY, "\u2014 example.org /keyserver "),
     "not a note signature line"),
    (lambda t: t[:-1], "no signature block"),
    (lambda t: t.replace("AAI=\n", "AAJ=\n"),
     "the checkpoint's signature is not canonical base64"),
    (lambda t: t.replace("AAI=\n", "AAI\n"), "the checkpoint's signature is not base64"),
], ids=["empty-origin", "root-of-31-bytes", "root-not-canonical", "empty-line-after",
        "empty-signer-name", "space-in-signer-name", "no-final-newline",
        "signature-not-canonical", "signature-not-base64"])
def test_a_note_off_the_signed_note_format_does_not_parse(vectors, change, error):
    """Each refusal says which part is off: the client shows it, and keeps it as
    evidence of what the server served."""
    with pytest.raises(VerificationError, match=re.escape(error)):
        parse_note(change(vectors["checkpoint"]["note"]))
    with pytest.raises(VerificationError, match="not UTF-8"):
        parse_note(vectors["checkpoint"]["note"].encode() + b"\xff\n")


def test_signature_lines_hold_a_key_hash_and_at_least_one_byte():
    shortest = parse_signature_lines("\u2014 w " + base64.b64encode(bytes(5)).decode() + "\n")
    assert [(s.name, s.key_hash, s.signature) for s in shortest] == [("w", bytes(4), bytes(1))]
    with pytest.raises(VerificationError, match="a note signature is too short"):
        parse_signature_lines("\u2014 w " + base64.b64encode(bytes(4)).decode() + "\n")
    # A witness's answer is signature lines alone (§8.1), each ending in a newline.
    with pytest.raises(VerificationError, match="must end with a newline"):
        parse_signature_lines("\u2014 w " + base64.b64encode(bytes(5)).decode())


def test_a_checkpoint_by_another_key_is_refused(vectors):
    vector = vectors["checkpoint"]
    other = nacl.signing.SigningKey.generate()
    key = VerifierKey(vector["origin"], bytes(other.verify_key))
    with pytest.raises(VerificationError, match="no valid signature"):
        verify_checkpoint(parse_note(vector["note"]), key)
    assert base64.b64decode(vector["verifier_key"].split("+")[2] + "==")[:1] == b"\x01"

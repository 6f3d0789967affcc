"""The served and server-signed objects (``client.protocol.wire``): format then parse
gives the object back, ``format_x`` gives exactly what the server serves today, and
each malformed answer is refused with its exact error."""

import dataclasses
import json

import msgpack
import pytest
from freezegun import freeze_time

from client.protocol.encoding import b64encode, sha256
from client.protocol.errors import TransportError, VerificationError
from client.protocol.uidrules import Limits
from client.protocol.wire import (MSGPACK, Capabilities, Chunk, Head, IssuedTokens,
                                  KeyInitReceipt, ReplyEntry, TokenKeyInfo,
                                  format_capabilities, format_chunk, format_head,
                                  format_issued_tokens, format_keyinit_receipt,
                                  format_uid_message_reply, parse_capabilities, parse_chunk,
                                  parse_head, parse_issued_tokens, parse_keyinit_receipt,
                                  parse_uid_message_reply)
from client.protocol.wire import KeyInitStatus, format_keyinit_status, parse_keyinit_status
from client.protocol.wire import (CHECKPOINT_BYTES, ConsistencyProof, InclusionProof, LogHead,
                                  format_log_head, parse_checkpoint_note,
                                  parse_consistency_proof, parse_inclusion_proof,
                                  parse_log_head, parse_user_lookup)
from client.protocol.wire import (BUNDLE_SIZE, ReplyBundle, UIDMessageReply,
                                  format_reply_bundle, parse_reply_bundle, reply_signing_bytes)
from client.protocol.signedjson import signing_bytes
from client.protocol.note import ALG_COSIGNATURE, VerifierKey, format_verifier_key
from conftest import mutate

ENTRY = bytes(range(153))
ENCRYPTED = bytes(100)
SIGNATURES = {"example.org": {"ed25519:a_1": b64encode(bytes(64))}}
LIMITS = Limits(max_uid_lifetime_ms=1000, reclaim_grace_ms=2000, lastentry_max_age_ms=3000,
                max_chunk=10, max_keyinit_lifetime_ms=4000, max_keyinits_per_identity=5,
                max_keyinits_per_request=6, max_request_bytes=7000)
TOKEN_KEY = TokenKeyInfo(sha256(b"spki"), b"spki", 9000)
CAPABILITIES = Capabilities(
    server_name="example.org", version="1", methods=("KeyRepository.Capabilities",),
    domains=("example.org",), keyrepository_uris=("http://ks.test",),
    keyinitrepository_uris=("http://ks.test",), hashchain_uris=("http://ks.test",),
    hashchain_head=Head(4, ENTRY), sigpubkeys={"ed25519:a_1": bytes(32)},
    token_keys=(TOKEN_KEY,), token_prices={"create_uid": 1, "update_uid": 0},
    limits=LIMITS, log_vkey=VerifierKey("example.org/keyserver", bytes(range(32))), ts=1234,
    raw={})


def reply_obj():
    return format_uid_message_reply(ReplyEntry(ENCRYPTED, ENTRY, 3, 1234), SIGNATURES)


def capabilities_obj():
    return {**format_capabilities(CAPABILITIES), "signatures": SIGNATURES}


def receipt_obj():
    return format_keyinit_receipt(KeyInitReceipt(bytes(32), (bytes(32), b"\1" * 32), 55, {}))


# --- round trips ----------------------------------------------------------------------

def test_reply_round_trip_keeps_what_was_sent():
    obj = reply_obj()
    reply = parse_uid_message_reply(obj)
    assert reply.entry == ReplyEntry(ENCRYPTED, ENTRY, 3, 1234)
    assert reply.signatures == SIGNATURES and reply.raw is obj
    assert format_uid_message_reply(reply.entry, reply.signatures) == obj
    assert "signatures" not in format_uid_message_reply(reply.entry)


@pytest.mark.parametrize("change", [
    lambda obj: None,
    lambda obj: obj["entry"].update(hashchain_pos=2**53 - 1, ts=0),
    lambda obj: obj["entry"].update(uid_message_encrypted=b64encode(bytes(range(256)) * 3)),
    lambda obj: obj.update(unsigned={"age": 1}),                       # not signed
    lambda obj: obj.update(later="member"),                            # a later revision's
    lambda obj: obj["entry"].update(later="é\"\\\u2028"),             # needs escaping
])
def test_reply_signing_bytes_are_the_canonical_json(change):
    """The direct formatting of a reply's signed bytes is exactly the generic canonical
    JSON, and anything it does not know takes the generic way."""
    obj = reply_obj()
    change(obj)
    assert reply_signing_bytes(parse_uid_message_reply(obj)) == signing_bytes(obj)


def test_head_round_trip():
    head = Head(7, ENTRY, 99)
    assert parse_head(format_head(head)) == head
    assert format_head(Head(7, ENTRY)) == {"pos": 7, "entry": b64encode(ENTRY)}


@pytest.mark.parametrize("binary, content_type", [(True, MSGPACK), (False, "application/json")])
def test_chunk_round_trip(binary, content_type):
    chunk = Chunk(5, 9, [ENTRY, ENTRY[::-1]])
    body = format_chunk(chunk, binary=binary)
    data = msgpack.packb(body, use_bin_type=True) if binary else json.dumps(body).encode()
    assert parse_chunk(data, content_type) == chunk


def test_capabilities_round_trip():
    obj = capabilities_obj()
    parsed = parse_capabilities(obj)
    assert parsed == CAPABILITIES and parsed.raw is obj
    assert format_capabilities(parsed) == {k: v for k, v in obj.items() if k != "signatures"}
    dearest = {**obj, "token_prices": {"create_uid": 2 ** 53 - 1, "update_uid": 0}}
    assert parse_capabilities(dearest).token_prices["create_uid"] == 2 ** 53 - 1


def test_capabilities_tolerate_later_members():
    obj = {**capabilities_obj(), "later_member": {"name": "x"}}
    assert parse_capabilities(obj) == CAPABILITIES


def test_capabilities_witness_is_optional_and_checked():
    """§8.1: ``witness`` {name, vkey}, a cosignature key (type 0x04) of that name."""
    assert CAPABILITIES.witness is None and "witness" not in capabilities_obj()
    vkey = VerifierKey("example.org/witness", bytes(range(32)), ALG_COSIGNATURE)
    witnessing = dataclasses.replace(CAPABILITIES, witness=vkey)
    obj = format_capabilities(witnessing)
    assert obj["witness"] == {"name": vkey.name, "vkey": format_verifier_key(vkey)}
    assert parse_capabilities(obj) == witnessing
    log_key = VerifierKey(vkey.name, vkey.pubkey)                   # type 0x01: a log's
    for value in ({"name": vkey.name, "vkey": format_verifier_key(log_key)},
                  {"name": "other.example/witness", "vkey": format_verifier_key(vkey)},
                  {"name": vkey.name}, {"vkey": format_verifier_key(vkey)}, "x", None):
        with pytest.raises(VerificationError, match="witness"):
            parse_capabilities({**obj, "witness": value})


def test_capabilities_checkpoint_and_tiles_url_are_optional():
    assert (CAPABILITIES.checkpoint, CAPABILITIES.tiles_url) == (None, None)
    assert "tiles_url" not in capabilities_obj() and "checkpoint" not in capabilities_obj()
    for checkpoint in (None, "example.org/keyserver\n1\n...\n"):
        revised = dataclasses.replace(CAPABILITIES, checkpoint=checkpoint,
                                      tiles_url="https://tiles.example")
        obj = format_capabilities(revised)
        assert (obj["checkpoint"], obj["tiles_url"]) == (checkpoint, "https://tiles.example")
        assert parse_capabilities(obj) == revised
    obj = format_capabilities(dataclasses.replace(CAPABILITIES, tiles_url="https://t.example"))
    for member, value in (("checkpoint", 5), ("tiles_url", None), ("tiles_url", ["x"])):
        with pytest.raises(VerificationError, match=member):
            parse_capabilities({**obj, member: value})


def test_receipt_and_issuance_round_trip():
    receipt = parse_keyinit_receipt(receipt_obj())
    assert receipt == KeyInitReceipt(bytes(32), (bytes(32), b"\1" * 32), 55, {})
    assert format_keyinit_receipt(receipt) == receipt_obj()
    issued = IssuedTokens((b"sig1", b"sig2"), 3)
    assert parse_issued_tokens(format_issued_tokens(issued)) == issued


# --- format_x is what the server serves -----------------------------------------------

def unsigned(obj):
    return {k: v for k, v in obj.items() if k != "signatures"}


def test_formats_match_the_server(client, users):
    with freeze_time("2026-11-22 12:00:00"):
        capabilities = client.get("/v1/capabilities").json
    assert format_capabilities(parse_capabilities(capabilities)) == unsigned(capabilities)
    reply = users.register("alice@example.org").reply
    parsed = parse_uid_message_reply(reply)
    assert format_uid_message_reply(parsed.entry, parsed.signatures) == reply
    head = client.get("/v1/hashchain/head").json
    assert format_log_head(parse_log_head(head)) == head
    assert format_head(parse_head(head)) == {k: head[k] for k in ("pos", "entry", "ts")}
    for accept in ("application/json", MSGPACK):
        response = client.get("/v1/hashchain?start=0&count=5", headers={"Accept": accept})
        chunk = parse_chunk(response.data, response.mimetype)
        served = (msgpack.unpackb(response.data) if accept == MSGPACK else response.json)
        assert format_chunk(chunk, binary=accept == MSGPACK) == served


# --- rejects --------------------------------------------------------------------------

def change(path, value):
    """The object with the member at ``path`` set to ``value`` (``KeyError``: deleted)."""
    return lambda obj: mutate(obj, path, value)


REPLY_REJECTS = {
    "not-an-object": (lambda obj: [obj], "malformed reply: reply: not a JSON object"),
    "no-entry": (change(["entry"], KeyError), "malformed reply: entry: missing"),
    "entry-a-list": (change(["entry"], []), "malformed reply: entry: not a JSON object"),
    "no-message": (change(["entry", "uid_message_encrypted"], KeyError),
                   "malformed reply: uid_message_encrypted: missing"),
    "short-message": (change(["entry", "uid_message_encrypted"], b64encode(bytes(71))),
                      "malformed reply: uid_message_encrypted: shorter than 72 bytes"),
    "short-entry": (change(["entry", "hashchain_entry"], b64encode(bytes(152))),
                    "malformed reply: hashchain_entry: must encode 153 bytes, not 152"),
    "padded-entry": (change(["entry", "hashchain_entry"], b64encode(ENTRY) + "="),
                     "malformed reply: hashchain_entry: not unpadded base64"),
    "negative-pos": (change(["entry", "hashchain_pos"], -1),
                     "malformed reply: hashchain_pos: must be an integer in [0, 2^53-1]"),
    "pos-a-string": (change(["entry", "hashchain_pos"], "3"),
                     "malformed reply: hashchain_pos: must be an integer in [0, 2^53-1]"),
    "ts-a-float": (change(["entry", "ts"], 1.0),
                   "malformed reply: ts: must be an integer in [0, 2^53-1]"),
    "no-signatures": (change(["signatures"], KeyError), "malformed reply: signatures: missing"),
    "signatures-a-list": (change(["signatures"], []),
                          "malformed reply: signatures: not a JSON object"),
    "signature-not-a-string": (change(["signatures", "example.org"], {"ed25519:a": 1}),
                               "malformed reply: signatures.example.org: must map key ids to "
                               "signatures"),
}


@pytest.mark.parametrize("how, error", REPLY_REJECTS.values(), ids=REPLY_REJECTS.keys())
def test_malformed_replies_are_refused(how, error):
    with pytest.raises(VerificationError) as info:
        parse_uid_message_reply(how(reply_obj()))
    assert str(info.value) == error


def test_a_reply_error_starts_with_what_the_caller_names():
    with pytest.raises(VerificationError, match="^the reply for position 3 is malformed: "
                       "uid_message_encrypted: missing$"):
        parse_uid_message_reply(change(["entry", "uid_message_encrypted"], KeyError)(reply_obj()),
                                what="the reply for position 3 is malformed")


HEAD_REJECTS = {
    "no-ts": (change(["ts"], KeyError), "the server's head is malformed: ts: missing"),
    "negative-pos": (change(["pos"], -1),
                     "the server's head is malformed: pos: must be an integer in [0, 2^53-1]"),
    "short-entry": (change(["entry"], b64encode(bytes(32))),
                    "the server's head is malformed: entry: must encode 153 bytes, not 32"),
    "a-list": (lambda obj: [], "the server's head is malformed: head: not a JSON object"),
}


def test_a_checkpoint_note_of_16_kib_is_read_and_a_longer_one_refused(vectors):
    note = vectors["checkpoint"]["note"].encode()
    line = "\u2014 {} AAAAAAA=\n"     # a signature line: 4-byte key hash, 1 byte
    filler = len(line.format("").encode())
    longest = note + line.format("n" * (CHECKPOINT_BYTES - len(note) - filler)).encode()
    assert len(longest) == CHECKPOINT_BYTES == 16 * 1024
    assert len(parse_checkpoint_note(longest).signatures) == 2
    with pytest.raises(VerificationError, match="the checkpoint is too long"):
        parse_checkpoint_note(longest.replace(b" AAAAAAA=", b"n AAAAAAA="))


PROOF = {"first": 1, "second": 2, "hashes": [b64encode(bytes(32))] * 2}


@pytest.mark.parametrize("obj, message", [
    ([], "not a JSON object"),
    ({**PROOF, "hashes": "x"}, "hashes: must be a list"),
    ({**PROOF, "hashes": [b64encode(bytes(32)), b64encode(bytes(31))]},
     "hashes[1]: must encode 32 bytes, not 31"),
    ({**PROOF, "hashes": [b64encode(bytes(32))] * 129}, "hashes: more than 128"),
])
def test_a_malformed_consistency_proof_is_the_servers_fault(obj, message):
    with pytest.raises(VerificationError) as info:
        parse_consistency_proof(obj)
    assert str(info.value) == f"the consistency proof is malformed: {message}"
    assert parse_consistency_proof(PROOF) == ConsistencyProof(1, 2, (bytes(32),) * 2)
    longest = {**PROOF, "hashes": [b64encode(bytes(32))] * 128}    # two paths of 64
    assert len(parse_consistency_proof(longest).hashes) == 128


def test_log_head_round_trip_with_and_without_a_checkpoint():
    for log_head in (LogHead(Head(7, ENTRY, 99)),
                     LogHead(Head(7, ENTRY, 99), 6, bytes(range(32)), "a note\n")):
        assert parse_log_head(format_log_head(log_head)) == log_head


def log_head(**members):
    return {**format_log_head(LogHead(Head(7, ENTRY, 99), 6, bytes(32), "a note\n")),
            **members}


@pytest.mark.parametrize("obj, message", [
    ([], "head: not a JSON object"),
    (log_head(tree_size="6"), "tree_size: must be an integer in [0, 2^53-1]"),
    (log_head(root_hash=b64encode(bytes(31))), "root_hash: must encode 32 bytes, not 31"),
    (log_head(checkpoint=None), "checkpoint: must be a string"),
])
def test_a_malformed_log_head_is_the_servers_fault(obj, message):
    with pytest.raises(VerificationError) as info:
        parse_log_head(obj)
    assert str(info.value) == f"the server's head is malformed: {message}"


@pytest.mark.parametrize("obj, message", [
    ([], "not a JSON object"), ({}, "leaf_proof: missing"),
    ({"leaf_proof": None, "identity": 1}, "identity: must be a string"),
])
def test_a_malformed_lookup_answer_is_the_servers_fault(obj, message):
    # What ``keyclient lookup --light`` shows: a VerificationError saying what is wrong.
    with pytest.raises(VerificationError, match=f"^the lookup answer is malformed: {message}$"):
        parse_user_lookup(obj)


INCLUSION = {"leaf_index": 3, "tree_size": 9, "hashes": [b64encode(bytes(32))] * 4}


@pytest.mark.parametrize("obj, message", [
    ([], "not a JSON object"),
    ({**INCLUSION, "tree_size": -1}, "tree_size: must be an integer in [0, 2^53-1]"),
    ({**INCLUSION, "hashes": [b64encode(bytes(31))]}, "hashes[0]: must encode 32 bytes, not 31"),
])
def test_a_malformed_inclusion_proof_is_the_servers_fault(obj, message):
    """Alone (``/v1/hashchain/proof/inclusion``) or as a lookup's ``leaf_proof``, a
    malformed proof is the server's fault, and the error says which proof."""
    with pytest.raises(VerificationError) as info:
        parse_inclusion_proof(obj)
    assert str(info.value) == f"the inclusion proof is malformed: {message}"
    lookup = {"identity": "alice@example.org", "uid_message_reply": reply_obj(),
              "leaf_proof": obj, "head": log_head()}
    with pytest.raises(VerificationError) as info:
        parse_user_lookup(lookup)
    assert str(info.value) == f"the lookup's leaf_proof is malformed: {message}"
    assert parse_user_lookup({**lookup, "leaf_proof": INCLUSION}).leaf_proof == \
        InclusionProof(3, 9, (bytes(32),) * 4)


@pytest.mark.parametrize("how, error", HEAD_REJECTS.values(), ids=HEAD_REJECTS.keys())
def test_malformed_heads_are_refused(how, error):
    with pytest.raises(VerificationError) as info:
        parse_head(how(format_head(Head(1, ENTRY, 2))))
    assert str(info.value) == error


CHUNK_REJECTS = {
    "not-msgpack": (b"\xc1", MSGPACK, "hashchain chunk is malformed: "),
    "entries-as-strings": (msgpack.packb({"first_pos": 0, "head_pos": 0, "entries": ["x"]}),
                           MSGPACK, "hashchain chunk: entries must be binary"),
    "no-head": (json.dumps({"first_pos": 0, "entries": []}).encode(), "application/json",
                "hashchain chunk is malformed: 'head_pos'"),
    "head-a-string": (json.dumps({"first_pos": 0, "head_pos": "1", "entries": []}).encode(),
                      "application/json", "hashchain chunk: head_pos is not a position"),
    "below-minus-one": (json.dumps({"first_pos": -2, "head_pos": 1, "entries": []}).encode(),
                        "application/json", "hashchain chunk: first_pos is not a position"),
    "bad-base64": (json.dumps({"first_pos": 0, "head_pos": 1, "entries": ["a="]}).encode(),
                   "application/json", "entry: not unpadded base64"),
    "key-no-string": (msgpack.packb({1: 0, "first_pos": 0, "head_pos": 0, "entries": []}),
                      MSGPACK, "hashchain chunk is malformed: "),
}


@pytest.mark.parametrize("body, content_type, error", CHUNK_REJECTS.values(),
                         ids=CHUNK_REJECTS.keys())
def test_malformed_chunks_are_transport_errors(body, content_type, error):
    with pytest.raises(TransportError) as info:
        parse_chunk(body, content_type)
    assert str(info.value).startswith(error)


def test_a_chunk_of_the_empty_chain_has_its_head_at_minus_one():
    body = json.dumps({"first_pos": 0, "head_pos": -1, "entries": []}).encode()
    assert parse_chunk(body, "application/json") == Chunk(0, -1, [])


def test_chunk_entries_of_a_wrong_length_are_left_to_the_chain_check():
    """``verify_entries`` names the position of a short entry; the parser keeps it."""
    body = msgpack.packb({"first_pos": 0, "head_pos": 0, "entries": [b"short"]})
    assert parse_chunk(body, MSGPACK).entries == [b"short"]


CAPABILITY_REJECTS = {
    "not-an-object": (lambda obj: [], "malformed capabilities: capabilities: not a JSON object"),
    "empty": (lambda obj: {}, "malformed capabilities: server_name: missing"),
    "name-a-path": (change(["server_name"], "../x"),
                    "capabilities name '../x', which is not a server name"),
    "no-version": (change(["version"], KeyError), "malformed capabilities: version: missing"),
    "methods-a-string": (change(["methods"], "x"),
                         "malformed capabilities: methods: must be a list of strings"),
    "uris-a-string": (change(["keyinitrepository_uris"], "http://x"),
                      "malformed capabilities: keyinitrepository_uris: must be a list of "
                      "strings"),
    "head-without-entry": (change(["hashchain_head", "entry"], KeyError),
                           "malformed capabilities: hashchain_head: entry: missing"),
    "short-sigpubkey": (change(["sigpubkeys", "ed25519:a_1"], b64encode(bytes(31))),
                        "malformed capabilities: sigpubkeys.ed25519:a_1: must encode 32 bytes, "
                        "not 31"),
    "token-key-id-short": (change(["token_keys", 0, "key_id"], b64encode(bytes(31))),
                           "malformed capabilities: token_keys[0]: key_id: must encode 32 "
                           "bytes, not 31"),
    "token-keys-an-object": (change(["token_keys"], {}),
                             "malformed capabilities: token_keys: must be a list"),
    "prices-a-list": (change(["token_prices"], [1]),
                      "malformed capabilities: token_prices: not a JSON object"),
    "price-a-string": (change(["token_prices", "create_uid"], "1"),
                       "malformed capabilities: token_prices.create_uid: must be a count"),
    "limits-a-string": (change(["limits"], "x"),
                        "malformed capabilities: limits: not a JSON object"),
    "negative-grace": (change(["limits", "reclaim_grace_ms"], -1),
                       "malformed capabilities: limits: reclaim_grace_ms: must be an integer "
                       "in [0, 2^53-1]"),
    "no-keyinit-lifetime": (change(["limits", "max_keyinit_lifetime_ms"], KeyError),
                            "malformed capabilities: limits: max_keyinit_lifetime_ms: missing"),
    "no-ts": (change(["ts"], KeyError), "malformed capabilities: ts: missing"),
    "log-vkey-not-a-key": (change(["log_vkey"], "x"), "malformed capabilities: log_vkey: "
                           "expected <name>+<8 hex digits>+<base64 key>"),
    "witness-not-an-object": (change(["witness"], "x"),
                              "malformed capabilities: witness: not a JSON object"),
}


@pytest.mark.parametrize("how, error", CAPABILITY_REJECTS.values(),
                         ids=CAPABILITY_REJECTS.keys())
def test_malformed_capabilities_are_refused(how, error):
    with pytest.raises(VerificationError) as info:
        parse_capabilities(how(capabilities_obj()))
    assert str(info.value).startswith(error)


RECEIPT_REJECTS = {
    "not-an-object": (lambda obj: [], "malformed KeyInit receipt: receipt: not a JSON object"),
    "short-sigkeyhash": (change(["sigkeyhash"], b64encode(bytes(31))),
                         "malformed KeyInit receipt: sigkeyhash: must encode 32 bytes, not 31"),
    "hashes-a-string": (change(["keyinit_hashes"], "x"),
                        "malformed KeyInit receipt: keyinit_hashes: must be a list"),
    "short-hash": (change(["keyinit_hashes", 1], b64encode(bytes(8))),
                   "malformed KeyInit receipt: keyinit_hashes[1]: must encode 32 bytes, not 8"),
    "no-ts": (change(["ts"], KeyError), "malformed KeyInit receipt: ts: missing"),
}


@pytest.mark.parametrize("how, error", RECEIPT_REJECTS.values(), ids=RECEIPT_REJECTS.keys())
def test_malformed_receipts_are_refused(how, error):
    with pytest.raises(VerificationError) as info:
        parse_keyinit_receipt(how(receipt_obj()))
    assert str(info.value) == error


ISSUANCE_REJECTS = {
    "not-an-object": ([], "malformed token issuance answer: answer: not a JSON object"),
    "no-sigs": ({"remaining": 1}, "malformed token issuance answer: blind_sigs: missing"),
    "sigs-an-object": ({"blind_sigs": {}, "remaining": 1},
                       "malformed token issuance answer: blind_sigs: must be a list"),
    "no-remaining": ({"blind_sigs": []},
                     "malformed token issuance answer: remaining: missing"),
    # A blind signature that is not base64 is the server's fault, as the others
    # (VerificationError), not a request of ours the server refused.
    "sig-not-base64": ({"blind_sigs": ["not base64!"], "remaining": 0},
                       "malformed token issuance answer: blind_sigs[0]: not unpadded base64"),
}


@pytest.mark.parametrize("obj, error", ISSUANCE_REJECTS.values(), ids=ISSUANCE_REJECTS.keys())
def test_malformed_issuance_answers_are_refused(obj, error):
    with pytest.raises(VerificationError) as info:
        parse_issued_tokens(obj)
    assert str(info.value) == error


@pytest.mark.parametrize("status", [KeyInitStatus(3, 1, 1_800_000_000_000),
                                    KeyInitStatus(0, 0, None)])
def test_keyinit_status_round_trip(status):
    assert parse_keyinit_status(format_keyinit_status(status)) == status


STATUS_REJECTS = {
    "not-an-object": ([], "answer: not a JSON object"),
    "no-expiry": ({"stored": 1, "fallback": 0}, "expires_first_ts: missing"),
    "negative-stored": ({"stored": -1, "fallback": 0, "expires_first_ts": None},
                        "stored: must be an integer in [0, 2^53-1]"),
    "fallback-a-bool": ({"stored": 1, "fallback": True, "expires_first_ts": None},
                        "fallback: must be an integer in [0, 2^53-1]"),
    "expiry-a-string": ({"stored": 1, "fallback": 0, "expires_first_ts": "soon"},
                        "expires_first_ts: must be an integer in [0, 2^53-1]"),
}


@pytest.mark.parametrize("obj, message", STATUS_REJECTS.values(), ids=STATUS_REJECTS.keys())
def test_malformed_keyinit_status(obj, message):
    """An unsigned answer, so a transport error, naming the malformed member."""
    with pytest.raises(TransportError) as info:
        parse_keyinit_status(obj)
    assert str(info.value) == f"malformed KeyInit status answer: {message}"


# --- Reply bundles (§5.1) -------------------------------------------------------------

def bundle_obj(bundle: int = 1, count: int = 3) -> dict:
    """Bundle ``bundle``'s first ``count`` replies, as served."""
    return format_reply_bundle(ReplyBundle(bundle, tuple(
        UIDMessageReply(ReplyEntry(ENCRYPTED, ENTRY, bundle * BUNDLE_SIZE + offset, 1000),
                        SIGNATURES, {})
        for offset in range(count))))


@pytest.mark.parametrize("pack, content_type", [(json.dumps, "application/json"),
                                                (msgpack.packb, MSGPACK)])
def test_bundle_round_trip(pack, content_type):
    obj = bundle_obj()
    body = pack(obj).encode() if pack is json.dumps else pack(obj)
    bundle = parse_reply_bundle(body, content_type, 1)
    assert [reply.raw for reply in bundle.replies] == obj["replies"]
    assert format_reply_bundle(bundle) == obj


def test_a_full_bundle_parses():
    bundle = parse_reply_bundle(json.dumps(bundle_obj(2, BUNDLE_SIZE)).encode(), "", 2)
    assert bundle.replies[-1].entry.hashchain_pos == 3 * BUNDLE_SIZE - 1


def without(position: int):
    return lambda obj: {**obj, "replies": obj["replies"][:position] + obj["replies"][position + 1:]}


BUNDLE_REJECTS = {
    "not an object": (lambda obj: [obj], "answer: not a JSON object"),
    "another bundle": (change(["bundle"], 2), "bundle: is 2, not the bundle asked for"),
    "bundle not an integer": (change(["bundle"], "1"),
                              "bundle: must be an integer in [0, 2^53-1]"),
    "no replies member": (change(["replies"], KeyError), "replies: missing"),
    "replies not a list": (change(["replies"], {}), "replies: must be a list"),
    "no replies": (change(["replies"], []), "replies: must hold 1 to 256 replies"),
    "a gap": (without(1), "replies[1]: is for position 258, not 257"),
    "not from the bundle's start": (without(0), "replies[0]: is for position 257, not 256"),
    "a malformed reply": (change(["replies", 2, "entry", "ts"], -1),
                          "replies[2]: ts: must be an integer in [0, 2^53-1]"),
    "a reply not an object": (change(["replies", 0], "x"), "replies[0]: reply: not a JSON object"),
    "more than a bundle": (lambda obj: bundle_obj(1, BUNDLE_SIZE + 1),
                           "replies: must hold 1 to 256 replies"),
}


@pytest.mark.parametrize("how, message", BUNDLE_REJECTS.values(), ids=BUNDLE_REJECTS.keys())
def test_malformed_bundles_are_refused(how, message):
    """The error names the bundle asked for and the malformed member, down to the reply."""
    with pytest.raises(VerificationError) as info:
        parse_reply_bundle(json.dumps(how(bundle_obj())).encode(), "application/json", 1)
    assert str(info.value) == f"reply bundle 1 is malformed: {message}"


@pytest.mark.parametrize("body, content_type", [
    (b"{", "application/json"), (b"\xc1", MSGPACK),
    (msgpack.packb({1: "bundle"}), MSGPACK),     # a map key that is no string: not JSON's data
])
def test_undecodable_bundles_are_transport_errors(body, content_type):
    with pytest.raises(TransportError, match="^reply bundle 0 is malformed: "):
        parse_reply_bundle(body, content_type, 0)

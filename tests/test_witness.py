"""The witness (§8.1, C2SP tlog-witness), in process: every rule of
``POST /witness/add-checkpoint`` (404 unknown origin, 403 no valid log signature, 400
malformed or ``old`` beyond the size, 409 stale ``old`` or another root for the held
size with the held size as ``text/x.tlog.size``, 422 bad proof kept as evidence, 200
with a cosignature that the published witness key verifies), nothing changed by any
refusal; the witness key, its place in capabilities, the configuration and the
operator's ``keyserver witness`` commands."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import stat

import nacl.signing
import pytest

from client.protocol.checkpoint import Checkpoint, Note, Signature, parse_note, \
    parse_signature_lines, sign_checkpoint
from client.protocol.cosignature import (SIZE_CONTENT_TYPE, check_cosignature,
                                         format_add_checkpoint)
from client.protocol.errors import VerificationError
from client.protocol.merkle import MemoryTree, prove_consistency, tree_root
from client.protocol.note import ALG_COSIGNATURE, VerifierKey, format_verifier_key
from client.protocol.wire import parse_capabilities
from conftest import SERVER_NAME, at, now_ms, run_together, with_cosignatures
from keyserver import create_app
from keyserver.config import ConfigError
from keyserver.service.signing import read_keys, witness_key

ORIGIN = "log.example/keyserver"
ROUTE = "/witness/add-checkpoint"


class Log:
    """A log for the witness to follow: ``entries`` leaves in memory, checkpoints of
    any size signed by its key, consistency proofs between sizes."""

    def __init__(self, seed: bytes = b"L" * 32, origin: str = ORIGIN, entries: int = 40,
                 salt: bytes = b""):
        self.key = nacl.signing.SigningKey(seed)
        self.vkey = VerifierKey(origin, bytes(self.key.verify_key))
        self.tree = MemoryTree([b"entry %d%s" % (i, salt) for i in range(entries)])

    def note(self, size: int) -> Note:
        checkpoint = Checkpoint(self.vkey.name, size, tree_root(size, self.tree))
        return sign_checkpoint(checkpoint, self.vkey, self.key)

    def proof(self, old: int, size: int) -> list[bytes]:
        return prove_consistency(old, size, self.tree)

    def body(self, old: int, size: int, proof: list[bytes] | None = None) -> bytes:
        return format_add_checkpoint(old, self.proof(old, size) if proof is None else proof,
                                     self.note(size).text())


LOG = Log()


def witness_logs(*logs: Log) -> dict:
    return {log.vkey.name: [format_verifier_key(log.vkey)] for log in logs}


@pytest.fixture
def app(instance):
    return create_app({"TESTING": True, "WITNESS_LOGS": witness_logs(LOG)},
                      instance_path=str(instance))


def held(instance) -> dict[str, int]:
    """origin -> the size the witness holds, from its database."""
    with sqlite3.connect(instance / "keyserver.sqlite") as conn:
        return dict(conn.execute("SELECT origin, tree_size FROM witnessed_logs"))


def evidence(instance) -> list[tuple[str, bytes, str]]:
    with sqlite3.connect(instance / "keyserver.sqlite") as conn:
        return conn.execute("SELECT origin, request, reason FROM witness_evidence"
                            " ORDER BY id").fetchall()


def witness_vkey_of(client) -> VerifierKey:
    """The witness key as the server's signed capabilities publish it."""
    capabilities = parse_capabilities(client.get("/v1/capabilities").get_json())
    assert capabilities.witness is not None
    return capabilities.witness


def add(client, body: bytes):
    return client.post(ROUTE, data=body, content_type="text/plain")


def refused(client, instance, body: bytes, status: int, errcode: str | None = None):
    """``body`` is refused with ``status`` (and ``errcode``) and the held sizes stay."""
    before = held(instance)
    response = add(client, body)
    assert response.status_code == status, response.data
    if errcode is not None:
        assert response.get_json()["errcode"] == errcode
    assert held(instance) == before
    return response


def accepted(client, body: bytes) -> Signature:
    response = add(client, body)
    assert response.status_code == 200, response.data
    assert response.content_type == "text/plain; charset=utf-8"
    signatures = parse_signature_lines(response.get_data(as_text=True))
    assert len(signatures) == 1
    return signatures[0]


def test_a_first_checkpoint_is_cosigned_with_the_published_key(client, instance, runner):
    t = now_ms()
    with at(t):
        signature = accepted(client, LOG.body(0, 5))
    note = with_cosignatures(LOG.note(5), [signature])
    published = witness_vkey_of(client)
    assert published.name == f"{SERVER_NAME}/witness" and published.alg == ALG_COSIGNATURE
    assert check_cosignature(note, published) == t // 1000
    # keyserver witness key prints the same name and key, one a line.
    result = runner.invoke(args=["witness", "key"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [published.name, format_verifier_key(published)]
    assert held(instance) == {ORIGIN: 5}
    # The cosignature covers this checkpoint only.
    with pytest.raises(VerificationError):
        check_cosignature(with_cosignatures(LOG.note(6), [signature]), published)


def test_a_checkpoint_extending_the_held_one_is_cosigned_with_a_proof(client, instance):
    accepted(client, LOG.body(0, 5))
    signature = accepted(client, LOG.body(5, 13))
    check_cosignature(with_cosignatures(LOG.note(13), [signature]), witness_vkey_of(client))
    assert held(instance) == {ORIGIN: 13}
    # The same checkpoint again (old = size, same root, empty proof) is cosigned again.
    accepted(client, LOG.body(13, 13))
    # A power-of-two old size, whose root starts the proof.
    accepted(client, LOG.body(13, 16))
    accepted(client, LOG.body(16, 40))
    assert held(instance) == {ORIGIN: 40}


def test_unknown_origin_is_404(client, instance):
    stranger = Log(origin="other.example/keyserver")
    refused(client, instance, stranger.body(0, 3), 404, "NOT_FOUND")


def test_a_note_signed_by_an_unknown_key_is_403(client, instance):
    impostor = Log(seed=b"X" * 32)            # the same origin, another key
    refused(client, instance, impostor.body(0, 3), 403, "INVALID_SIGNATURE")


def test_a_note_whose_only_signature_is_corrupted_is_403(client, instance):
    note = LOG.note(3)
    good = note.signatures[0]
    bad = Signature(good.name, good.key_hash, bytes([good.signature[0] ^ 1]) + good.signature[1:])
    forged = Note(note.checkpoint, note.body, (bad,))
    refused(client, instance, format_add_checkpoint(0, [], forged.text()), 403,
            "INVALID_SIGNATURE")


def test_signatures_of_unknown_keys_beside_a_valid_one_are_ignored(client, instance):
    note = LOG.note(3)
    other = Log(seed=b"Y" * 32, origin="someone.else").note(3).signatures[0]
    both = Note(note.checkpoint, note.body, (other,) + note.signatures)
    accepted(client, format_add_checkpoint(0, [], both.text()))


def test_old_beyond_the_size_is_400(client, instance):
    refused(client, instance, format_add_checkpoint(6, [], LOG.note(5).text()), 400,
            "BAD_REQUEST")


@pytest.mark.parametrize("body", [
    b"",
    b"old 0\n" + LOG.note(3).text().encode(),                 # no empty line
    b"old 00\n\n" + LOG.note(3).text().encode(),              # leading zero
    b"old -1\n\n" + LOG.note(3).text().encode(),
    b"new 0\n\n" + LOG.note(3).text().encode(),
    b"old 0\nnot-base64!\n\n" + LOG.note(3).text().encode(),
    b"old 0\n" + base64.b64encode(b"short") + b"\n\n" + LOG.note(3).text().encode(),
    b"old 0\n\n" + LOG.note(3).body,                          # no signature line
    b"old 0\n\n\xff\xfe",
    format_add_checkpoint(0, [bytes(32)] * 64, LOG.note(3).text()),   # 64 proof lines
], ids=["empty", "no-blank-line", "leading-zero", "negative", "not-old", "bad-base64",
        "short-hash", "unsigned-note", "not-utf8", "too-many-lines"])
def test_a_malformed_body_is_400(client, instance, body):
    refused(client, instance, body, 400, "BAD_REQUEST")


def test_an_oversize_body_is_413(client, instance):
    refused(client, instance, b"old 0\n" + b"x" * (40 * 1024), 413, "TOO_LARGE")


@pytest.mark.parametrize("old", [0, 3, 6])
def test_a_stale_old_is_409_with_the_held_size(client, instance, old):
    accepted(client, LOG.body(0, 5))
    response = refused(client, instance, LOG.body(old, 7), 409)
    assert response.headers["Content-Type"] == SIZE_CONTENT_TYPE
    assert response.data == b"5\n"
    assert evidence(instance) == []          # a log that lags contradicts nothing


def test_old_must_be_0_before_the_first_checkpoint(client, instance):
    response = refused(client, instance, LOG.body(2, 7), 409)
    assert response.headers["Content-Type"] == SIZE_CONTENT_TYPE
    assert response.data == b"0\n"


def test_another_root_for_the_held_size_is_409_and_kept(client, instance):
    accepted(client, LOG.body(0, 5))
    fork = Log(salt=b"fork")                    # the log's key, another history
    body = fork.body(5, 5)
    response = refused(client, instance, body, 409)
    assert response.headers["Content-Type"] == SIZE_CONTENT_TYPE
    assert response.data == b"5\n"
    [(origin, request, reason)] = evidence(instance)
    assert (origin, request) == (ORIGIN, body) and "another root" in reason


@pytest.mark.parametrize("case", ["other-history", "truncated", "empty", "extra-line"])
def test_a_bad_consistency_proof_is_422_and_kept(client, instance, case):
    accepted(client, LOG.body(0, 5))
    fork = Log(salt=b"fork")
    if case == "other-history":               # a proof of a tree that does not extend 5
        body = fork.body(5, 9)
    else:
        proof = LOG.proof(5, 9)
        proof = {"truncated": proof[:-1], "empty": [],
                 "extra-line": proof + [bytes(32)]}[case]
        body = LOG.body(5, 9, proof)
    response = refused(client, instance, body, 422, "BAD_REQUEST")
    assert "does not verify" in response.get_json()["error"]
    [(origin, request, reason)] = evidence(instance)
    assert (origin, request) == (ORIGIN, body) and "does not verify" in reason
    # The log can still go on from what the witness holds.
    accepted(client, LOG.body(5, 9))


def test_a_proof_where_none_is_due_is_422(client, instance):
    refused(client, instance, LOG.body(0, 3, [bytes(32)]), 422, "BAD_REQUEST")


def test_no_witness_configured_answers_404_and_capabilities_carry_no_witness(instance):
    client = create_app({"TESTING": True}, instance_path=str(instance)).test_client()
    assert "witness" not in client.get("/v1/capabilities").get_json()
    refused(client, instance, LOG.body(0, 3), 404, "NOT_FOUND")


def test_the_witness_key_is_made_by_init_private_and_kept(instance, client):
    path = instance / "witness.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    [key] = read_keys(str(path))
    assert key.key_id == "ed25519:witness"
    published = witness_vkey_of(client)
    assert published.pubkey == bytes(key.signing_key.verify_key)
    # The app made again (a restart) keeps it.
    again = create_app({"TESTING": True, "WITNESS_LOGS": witness_logs(LOG)},
                       instance_path=str(instance)).test_client()
    assert witness_vkey_of(again) == published


def test_an_instance_without_a_witness_key_gets_exactly_one(instance):
    path = instance / "witness.key"
    path.unlink()
    keys = run_together(8, lambda _: bytes(witness_key(str(path)).verify_key))
    assert len(set(keys)) == 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not [name for name in os.listdir(instance) if name.endswith(".tmp")]
    # Made when the app is made, for an instance older than witnesses.
    path.unlink()
    app = create_app({"TESTING": True, "WITNESS_LOGS": witness_logs(LOG)},
                     instance_path=str(instance))
    assert witness_vkey_of(app.test_client()).pubkey == bytes(witness_key(str(path)).verify_key)


def test_a_restored_witness_forgets_and_cosigns_only_under_a_new_key(instance, client,
                                                                      tmp_path):
    """A witness must never go back on what it cosigned (§8.1): restored from a backup,
    it remembers the backup's checkpoints while its old key may have cosigned larger
    ones since. The backup holds no witness key; the restored witness has a new one,
    no memory, and the operator is told whom to give the key."""
    from click.testing import CliRunner

    from keyserver.cli import main

    old = witness_vkey_of(client)
    accepted(client, LOG.body(0, 10))
    result = CliRunner().invoke(main, ["backup", str(tmp_path / "b"), "--instance",
                                       str(instance)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "b" / "witness.key").exists()
    # As a backup made before backups left the key out holds it: replaced all the same.
    shutil.copy2(instance / "witness.key", tmp_path / "b" / "witness.key")
    accepted(client, LOG.body(10, 20))       # cosigned after the backup: lost with it
    restored = tmp_path / "restored"
    result = CliRunner().invoke(main, ["restore", str(tmp_path / "b"),
                                      "--instance", str(restored)])
    assert result.exit_code == 0, result.output
    again = create_app({"TESTING": True, "WITNESS_LOGS": witness_logs(LOG)},
                       instance_path=str(restored)).test_client()
    new = witness_vkey_of(again)
    assert new.name == old.name and new.pubkey != old.pubkey
    assert f"the witness has a new key, {format_verifier_key(new)}" in result.stdout
    assert "witnessed 1 log(s)" in result.stderr and "WITNESSES" in result.stderr
    assert held(restored) == {}
    # A fork of the tree the old key cosigned at 20: what the restored memory would
    # have let through under the old key is signed only under the new one.
    fork = Log(salt=b"fork")
    signature = accepted(again, fork.body(0, 15))
    note = with_cosignatures(fork.note(15), [signature])
    check_cosignature(note, new)
    with pytest.raises(VerificationError, match="no valid cosignature"):
        check_cosignature(note, old)


@pytest.mark.parametrize("logs, message", [
    ([], "must map log origins"),
    ({ORIGIN: []}, ORIGIN),
    ({ORIGIN: "not a list"}, ORIGIN),
    ({ORIGIN: ["log.example/keyserver+00000000+AAAA"]}, ORIGIN),
    ({ORIGIN: [format_verifier_key(VerifierKey(ORIGIN, bytes(32), ALG_COSIGNATURE))]}, ORIGIN),
    ({"": [format_verifier_key(LOG.vkey)]}, "not a log origin"),
])
def test_a_bad_witness_logs_setting_stops_the_app(instance, logs, message):
    with pytest.raises(ConfigError, match="WITNESS_LOGS") as raised:
        create_app({"WITNESS_LOGS": logs}, instance_path=str(instance))
    assert message in str(raised.value)


def test_witness_logs_from_the_environment(instance, monkeypatch):
    monkeypatch.setenv("KEYSERVER_WITNESS_LOGS", json.dumps(witness_logs(LOG)))
    client = create_app({"TESTING": True}, instance_path=str(instance)).test_client()
    accepted(client, LOG.body(0, 2))


def test_witness_list(instance, runner, client):
    bare = create_app({"TESTING": True}, instance_path=str(instance)).test_cli_runner()
    assert "witnesses no log: WITNESS_LOGS is empty" in bare.invoke(args=["witness", "list"]).output
    output = runner.invoke(args=["witness", "list"]).output
    assert ORIGIN in output and format_verifier_key(LOG.vkey) in output
    assert "cosigned: nothing yet" in output and "evidence: 0" in output
    accepted(client, LOG.body(0, 5))
    refused(client, instance, Log(salt=b"fork").body(5, 9), 422)
    output = runner.invoke(args=["witness", "list"]).output
    assert "cosigned: size 5," in output and "evidence: 1 request(s) kept" in output


def test_the_held_checkpoint_is_the_note_as_sent(client, instance):
    accepted(client, LOG.body(0, 5))
    with sqlite3.connect(instance / "keyserver.sqlite") as conn:
        note, root = conn.execute("SELECT note, root_hash FROM witnessed_logs").fetchone()
    assert parse_note(note) == LOG.note(5) and root == tree_root(5, LOG.tree)

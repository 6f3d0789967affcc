"""The log side of witnessing (§8.1, ``keyserver.service.cosigning``): ``keyserver
worker`` asks the witnesses of ``WITNESSES`` to cosign each new checkpoint with a
consistency proof from the size each last cosigned (learned from a 409), stores
their cosignatures with the checkpoint and serves them with it (``?quorum=K``);
a witness that is down, refuses or hangs is logged once, retried with backoff,
and delays neither the log nor the other witnesses. The witnesses are scripted
(``scripted_witness``): real cosignatures, proofs checked."""

from __future__ import annotations

import json
import logging
import re
import threading

import pytest
from click.testing import CliRunner

from client.protocol.checkpoint import Note, parse_note, verify_checkpoint
from client.protocol.cosignature import check_cosignature
from client.protocol.encoding import format_ms
from client.protocol.note import ALG_COSIGNATURE, format_verifier_key, parse_verifier_key
from conftest import AppServer, at, cosigners, now_ms, run_together
from keyserver import create_app
from keyserver.cli import main as keyserver_main
from keyserver.config import ConfigError
from keyserver.http.context import POLICY
from keyserver.instance import LogShrunk
from keyserver.service import cosigning, duties
from keyserver.storage import db, published
from keyserver.storage.cosignatures import state
from scripted_witness import ScriptedWitness

RETRY_MIN = 100_000
RETRY_MAX = 250_000
#: Past CHECKPOINT_INTERVAL: every worker run with new entries makes a checkpoint.
STEP = 20_000
LOGGER = "keyserver.service.cosigning"


class WitnessedLog:
    """An in-process keyserver, its witnesses (scripted, in ``WITNESSES``) and its
    worker run once at a clock the test moves."""

    def __init__(self, tmp_path, monkeypatch):
        self.server = AppServer(tmp_path / "app")
        self.http = self.server.app.test_client()
        self.monkeypatch = monkeypatch
        self.log_vkey = parse_verifier_key(self.http.get("/v1/capabilities").json["log_vkey"])
        self.witnesses: dict[str, ScriptedWitness] = {}
        self.t = now_ms()
        monkeypatch.setenv("KEYSERVER_WITNESS_TIMEOUT", "300")
        monkeypatch.setenv("KEYSERVER_WITNESS_RETRY_MIN", str(RETRY_MIN))
        monkeypatch.setenv("KEYSERVER_WITNESS_RETRY_MAX", str(RETRY_MAX))

    def witness(self, name: str) -> ScriptedWitness:
        witness = self.witnesses[name] = ScriptedWitness(name, self.log_vkey)
        self.monkeypatch.setenv("KEYSERVER_WITNESSES", json.dumps(
            {n: w.config() for n, w in self.witnesses.items()}))
        return witness

    def worker(self, grow: int = 0, after: int = STEP) -> str:
        """Grow the chain, move the clock on by ``after``, run ``keyserver worker --once``."""
        if grow:
            self.server.load_chain(grow)
        self.t += after
        with at(self.t):
            result = CliRunner().invoke(keyserver_main, ["worker", "--once", "--instance",
                                                         str(self.server.instance)])
        assert result.exit_code == 0, result.output
        return result.output

    def note(self, query: str = "") -> Note:
        response = self.http.get(f"/v1/hashchain/checkpoint{query}")
        assert response.status_code == 200, response.json
        return parse_note(response.data)

    def status(self) -> list[str]:
        result = CliRunner().invoke(keyserver_main, ["witness", "status", "--instance",
                                                     str(self.server.instance)])
        assert result.exit_code == 0, result.output
        return result.output.splitlines()

    def line_of(self, name: str) -> str:
        [line] = [line for line in self.status() if line.startswith(f"{name} ")]
        return line

    def stop(self) -> None:
        for witness in self.witnesses.values():
            witness.stop()
        assert all(not witness.errors for witness in self.witnesses.values()), \
            {name: w.errors for name, w in self.witnesses.items()}


@pytest.fixture
def log(tmp_path, monkeypatch):
    log = WitnessedLog(tmp_path, monkeypatch)
    yield log
    log.stop()


def test_a_witness_cosigns_each_checkpoint_with_a_proof_from_the_last(log):
    w1 = log.witness("w1.example/witness")
    assert "checkpoint of tree size 6 cosigned by w1.example/witness" in log.worker(grow=5)
    assert w1.requests == [(0, 6)]
    note = log.note()
    assert verify_checkpoint(note, log.log_vkey).tree_size == 6
    assert check_cosignature(note, w1.vkey) == w1.timestamp
    # Every path that serves the checkpoint serves it with its cosignature.
    text = note.text()
    for query in ("?tree_size=6", "?covering=0", "?quorum=1", "?quorum=0"):
        assert log.note(query).text() == text
    assert log.http.get("/checkpoint").data.decode() == text
    assert log.http.get("/v1/hashchain/head").json["checkpoint"] == text
    missing = log.http.get("/v1/hashchain/checkpoint?quorum=2")
    assert missing.status_code == 404 and missing.json["errcode"] == "NOT_FOUND"

    log.worker(grow=4)
    assert w1.requests == [(0, 6), (6, 10)]        # the witness checked the proof
    assert check_cosignature(log.note(), w1.vkey) == w1.timestamp
    assert log.note("?tree_size=6").text() == text
    assert log.note("?quorum=1").checkpoint.tree_size == 10
    log.worker()                                      # nothing new: not asked again
    assert w1.requests == [(0, 6), (6, 10)]
    assert "cosigned size 10" in log.line_of(w1.name)
    assert "no failures" in log.line_of(w1.name)


def test_a_witness_that_holds_another_size_is_asked_again_from_it(log):
    w1 = log.witness("w1")
    log.worker(grow=5)
    w2 = log.witness("w2")
    w2.size, w2.root = w1.size, w1.root      # it saw size 6 elsewhere; the log never asked it
    log.worker(grow=3)
    assert w2.requests == [(0, 9), (6, 9)] and w1.requests == [(0, 6), (6, 9)]
    note = log.note("?quorum=2")
    assert note.checkpoint.tree_size == 9
    assert set(cosigners(note, [w1.vkey, w2.vkey])) == {"w1", "w2"}
    assert "cosigned size 9" in log.line_of("w2")


def fail(witness: ScriptedWitness, how: str) -> None:
    if how == "down":
        witness.stop()
    elif how == "hang":
        witness.hang = True
    else:
        witness.answer = (int(how), "text/plain", b"no\n")


def mend(witness: ScriptedWitness, how: str) -> None:
    if how == "down":
        witness.start()
    witness.hang, witness.answer = False, None


@pytest.mark.parametrize("how,error", [
    ("down", "ConnectionRefusedError"), ("500", "answered 500: no"),
    ("422", "answered 422: no"), ("hang", "took more than the time allowed")])
def test_a_failing_witness_backs_off_and_delays_nothing(log, caplog, how, error):
    caplog.set_level(logging.WARNING, LOGGER)
    good, bad = log.witness("good"), log.witness("bad")
    fail(bad, how)
    start = log.t + STEP
    assert "cosigned by good" in log.worker(grow=5)
    line = log.line_of("bad")
    assert "1 failure(s) in a row" in line and error in line
    assert f"next attempt {format_ms(start + RETRY_MIN)}" in line
    asked = len(bad.requests)

    # Before the backoff: the log makes checkpoints, the good witness cosigns them.
    log.worker(grow=2, after=RETRY_MIN - 1000)
    assert log.note().checkpoint.tree_size == 8
    assert cosigners(log.note(), [good.vkey, bad.vkey]) == {"good": good.timestamp}
    assert "1 failure(s)" in log.line_of("bad") and len(bad.requests) == asked
    assert log.http.get("/v1/hashchain/head").status_code == 200

    # After it: asked again; the backoff doubles; logged once for the episode.
    log.worker(after=1000)
    line = log.line_of("bad")
    assert "2 failure(s) in a row" in line
    assert f"next attempt {format_ms(start + RETRY_MIN + 2 * RETRY_MIN)}" in line
    warnings = [r for r in caplog.records if r.name == LOGGER and "bad" in r.getMessage()]
    assert len(warnings) == 1 and error in warnings[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)

    mend(bad, how)
    log.worker(after=2 * RETRY_MIN - 1)
    assert "2 failure(s)" in log.line_of("bad")        # still backing off
    assert "cosigned by bad again after 2 failures" in log.worker(after=1)
    note = log.note("?quorum=2")
    assert note.checkpoint.tree_size == 8
    assert "no failures" in log.line_of("bad") and "cosigned size 8" in log.line_of("bad")


def test_the_backoff_stops_growing_at_its_maximum(log):
    bad = log.witness("bad")
    bad.answer = (500, "text/plain", b"")
    log.worker(grow=1)
    for delay in (RETRY_MIN, 2 * RETRY_MIN, RETRY_MAX):
        log.worker(after=delay)
    assert "4 failure(s)" in log.line_of("bad")
    assert f"next attempt {format_ms(log.t + RETRY_MAX)}" in log.line_of("bad")


def test_a_cosignature_by_another_key_is_not_stored(log):
    w1 = log.witness("w1")
    w1.wrong_key = True
    assert "cosigned" not in log.worker(grow=3)
    assert w1.requests == [(0, 4)]
    assert len(log.note().signatures) == 1          # the log's own only
    assert log.http.get("/v1/hashchain/checkpoint?quorum=1").status_code == 404
    assert "without a valid cosignature by its configured key" in log.line_of("w1")


def test_a_witness_beyond_the_log_records_the_published_size(log, caplog):
    """A witness holds size 1000 of a log that has 6 entries: the log lost published
    entries (an old backup restored). Said loudly, recorded, not retried; the
    instance refuses to serve from its next start."""
    w1 = log.witness("w1")
    w1.size, w1.root = 1000, bytes(32)
    log.worker(grow=5)
    assert w1.requests == [(0, 6)]
    [alarm] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "lost entries it had published" in alarm.getMessage()
    assert published.read(str(log.server.instance)) == 1000
    assert "rolled back" in log.line_of("w1")
    with pytest.raises(LogShrunk):
        create_app(instance_path=str(log.server.instance))


def test_status_without_witnesses_says_so(log):
    assert log.status() == ["no witnesses configured (WITNESSES is empty): checkpoints are "
                            "not cosigned, and clients that require a quorum do not trust "
                            "this log"]


def test_two_workers_ask_each_witness_once_and_store_once(log):
    log.worker(grow=5)                      # a checkpoint before any witness
    w1, w2 = log.witness("w1"), log.witness("w2")
    apps = [create_app(instance_path=str(log.server.instance)) for _ in range(2)]
    log.t += STEP

    def run(index):
        with apps[index].app_context():
            return duties.cosign(db.get_db(), apps[index].extensions[POLICY], log.t)
    with at(log.t):
        done = run_together(2, run)
    assert sorted(line for lines in done for line in lines) == [
        "checkpoint of tree size 6 cosigned by w1", "checkpoint of tree size 6 cosigned by w2"]
    assert w1.requests == [(0, 6)] and w2.requests == [(0, 6)]
    assert len(log.note().signatures) == 3

    # Had both asked (a claim that ran out), storing the same answers again changes nothing.
    note = log.note()
    with apps[0].app_context():
        database, policy = db.get_db(), apps[0].extensions[POLICY].cosigning
        replies = {name: cosigning.Reply(line, w1.timestamp) for name, line in
                   (("w1", note.signatures[1]), ("w2", note.signatures[2]))}
        cosigning._store(database, policy, 6, replies, log.t)
        assert [state(database, name).cosigned_size for name in ("w1", "w2")] == [6, 6]
    assert log.note().text() == note.text()


@pytest.mark.parametrize("witnesses,message", [
    ([], "must map witness names"),
    ({"w": {"url": "http://x"}}, 'must be {"url": ..., "vkey": ...}'),
    ({"w": {"url": "ftp://x", "vkey": "v"}}, "WITNESSES['w'].url must be an http"),
    ({"w": {"url": "http://x", "vkey": "w+00+AA=="}}, "WITNESSES['w'].vkey"),
    ({"w": {"url": "http://x", "vkey": "LOG"}}, "not an Ed25519 key (0x04"),
    ({"w": {"url": "http://x", "vkey": "OTHER"}}, "is the key of 'other', not of 'w'"),
])
def test_bad_witnesses_stop_the_app(instance, log, witnesses, message):
    other = ScriptedWitness("other", log.log_vkey)
    other.stop()
    keys = {"LOG": format_verifier_key(log.log_vkey), "OTHER": format_verifier_key(other.vkey)}
    for witness in witnesses.values() if isinstance(witnesses, dict) else ():
        if witness.get("vkey") in keys:
            witness["vkey"] = keys[witness["vkey"]]
    with pytest.raises(ConfigError, match=re.escape(message)):
        create_app({"WITNESSES": witnesses}, instance_path=str(instance))
    with pytest.raises(ConfigError, match="WITNESS_RETRY_MAX must be at least"):
        create_app({"WITNESS_RETRY_MIN": 10, "WITNESS_RETRY_MAX": 9},
                   instance_path=str(instance))


def test_configured_witnesses_become_the_policy(instance, log):
    w1 = ScriptedWitness("w1", log.log_vkey)
    w1.stop()
    app = create_app({"WITNESSES": {"w1": {"url": w1.url + "/", "vkey": format_verifier_key(
        w1.vkey)}}}, instance_path=str(instance))
    [witness] = app.extensions[POLICY].cosigning.witnesses.values()
    assert witness.url == w1.url and witness.vkey == w1.vkey
    assert witness.vkey.alg == ALG_COSIGNATURE


def test_a_keyserver_witness_cosigns_the_log(log, tmp_path):
    """Against the real witness endpoint (§8.1) of another keyserver, served on
    127.0.0.1: cosigned from 0, then from the size it cosigned."""
    from werkzeug.serving import make_server

    from keyserver.instance import init_instance

    init_instance(str(tmp_path / "witness"), "witness.example", "http://127.0.0.1:1",
                  ["witness.example"])
    app = create_app({"WITNESS_LOGS": {log.log_vkey.name: [format_verifier_key(log.log_vkey)]}},
                     instance_path=str(tmp_path / "witness"))
    served = app.test_client().get("/v1/capabilities").json["witness"]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        log.monkeypatch.setenv("KEYSERVER_WITNESSES", json.dumps({served["name"]: {
            "url": f"http://127.0.0.1:{server.server_port}/witness", "vkey": served["vkey"]}}))
        vkey = parse_verifier_key(served["vkey"], alg=ALG_COSIGNATURE)
        assert f"cosigned by {vkey.name}" in log.worker(grow=5)
        assert f"cosigned by {vkey.name}" in log.worker(grow=3)
        note = log.note("?quorum=1")
        assert note.checkpoint.tree_size == 9 and vkey.name in cosigners(note, [vkey])
        assert "cosigned size 9" in log.line_of(vkey.name)
    finally:
        server.shutdown()
        thread.join()

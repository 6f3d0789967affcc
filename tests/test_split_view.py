"""A split view against two witnesses (§8.1): a hostile log (it holds its log key)
keeps two histories that share a witnessed prefix and shows witness A one and
witness B the other. Each witness cosigns the first view it is shown and refuses the
other (409 for the same size with another root, 422 for a larger tree whose proof
does not start from what it holds), keeping the request, signed by the log, as
evidence: so no view gets two cosignatures. A client with quorum 2 trusts neither
view beyond the prefix both cosigned, and the client that is shown both views keeps
the two checkpoints the log signed as evidence of the rewrite. Witnesses are real
keyserver apps (in process); the client is the real ``keyclient``."""

from __future__ import annotations

import json
import sqlite3

import pytest
from click.testing import CliRunner

from client.protocol.checkpoint import Checkpoint, Note, parse_note, parse_signature_lines, \
    sign_checkpoint, verify_checkpoint
from client.protocol.cosignature import format_add_checkpoint
from client.protocol.merkle import MemoryTree, prove_consistency, tree_root
from client.protocol.note import format_verifier_key
from client.protocol.wire import parse_capabilities
from conftest import ServerUserActions, init_instance, keyclient, with_cosignatures
from keyserver import create_app
from keyserver.cli import main as keyserver_main
from keyserver.service import own
from keyserver.service.signing import read_log_key
from simulator import TamperFetcher
from tamper_proxy import Answer, extend, real_chain
from test_checkpoints import ROUTE_CHECKPOINT, Log

SHARED = 4       # the witnessed prefix: entries both views have
SIZE = 7         # each view's size


class Witness:
    """A keyserver app that witnesses example.org's log, and its add-checkpoint calls."""

    def __init__(self, path, name: str, log_vkey: str):
        init_instance(str(path), name, f"https://{name}", [name])
        self.path = path
        app = create_app({"TESTING": True,
                          "WITNESS_LOGS": {"example.org/keyserver": [log_vkey]}},
                         instance_path=str(path))
        self.http = app.test_client()
        self.vkey = parse_capabilities(self.http.get("/v1/capabilities").get_json()).witness

    def add(self, old: int, proof: list[bytes], note: Note):
        return self.http.post("/witness/add-checkpoint", content_type="text/plain",
                              data=format_add_checkpoint(old, proof, note.text()))

    def cosign(self, old: int, proof: list[bytes], note: Note) -> Note:
        answer = self.add(old, proof, note)
        assert answer.status_code == 200, answer.data
        return with_cosignatures(note, parse_signature_lines(answer.get_data(as_text=True)))

    def evidence(self) -> list[str]:
        with sqlite3.connect(self.path / "keyserver.sqlite") as conn:
            return [reason for (reason,) in conn.execute(
                "SELECT reason FROM witness_evidence ORDER BY id")]


class View:
    """One history of the hostile log: a real server (the log's own instance, or a copy
    of it taken at the shared prefix, with the same keys) grown on its own; its entries,
    its tree and checkpoints signed by the log key."""

    def __init__(self, app, url: str, log_key, entries: list[bytes] | None = None):
        self.fetcher, self.app, self.url = TamperFetcher(app, url), app, url
        self.log_key = log_key
        self.vkey = own.log_verifier_key("example.org", log_key)
        self.entries = entries if entries is not None else self._fetch_entries()
        self.tree = MemoryTree(self.entries)

    def _fetch_entries(self) -> list[bytes]:
        entries: list[bytes] = []

        def capture(request):
            entries.extend(real_chain(request))
            return request.forward()

        self.fetcher.attack = capture
        self.fetcher.send("GET", "/v1/hashchain/head", {}, None)
        self.fetcher.attack = None
        return entries

    def note(self, size: int) -> Note:
        return sign_checkpoint(Checkpoint(self.vkey.name, size, tree_root(size, self.tree)),
                               self.vkey, self.log_key)

    def proof(self, old: int, size: int) -> list[bytes]:
        return prove_consistency(old, size, self.tree)

    def grown(self) -> "View":
        """This history with one more (made-up) entry: what it would show next."""
        return View(self.app, self.url, self.log_key,
                    extend(self.entries, len(self.entries) + 1))

    def serve(self, log: Log, note: Note) -> None:
        """From now on the client talks to this history, and every checkpoint it asks
        for is ``note``."""
        def checkpoint(request):
            if request.route != ROUTE_CHECKPOINT:
                return request.forward()
            return Answer(200, {"Content-Type": "text/plain"}, note.text().encode())

        self.fetcher.attack = checkpoint
        log.fetcher = self.fetcher


@pytest.fixture
def split(tmp_path, monkeypatch, cheap_keystore):
    """The log with alice on it, the two witnesses, and the two views: the log's
    instance and a copy taken at the shared prefix, each grown by other entries."""
    log = Log(tmp_path, monkeypatch)
    ServerUserActions(log.server).register("alice@example.org")
    log.server.load_chain(SHARED - 2)
    for args in (["backup", str(tmp_path / "backup"), "--instance", str(log.server.instance)],
                 ["restore", str(tmp_path / "backup"), "--instance", str(tmp_path / "copy")]):
        done = CliRunner().invoke(keyserver_main, args)
        assert done.exit_code == 0, done.output
    copy = create_app({"TESTING": True}, instance_path=str(tmp_path / "copy"))
    log.server.load_chain(SIZE - SHARED)
    loaded = copy.test_cli_runner().invoke(args=["chain", "load", "-n", str(SIZE - SHARED)])
    assert loaded.exit_code == 0, loaded.output
    log_key = read_log_key(str(log.server.instance / "log.key"))
    text = format_verifier_key(own.log_verifier_key("example.org", log_key))
    witnesses = [Witness(tmp_path / name, name, text) for name in ("a.test", "b.test")]
    views = [View(log.server.app, log.server.url, log_key),
             View(copy, log.server.url, log_key)]
    assert [len(view.entries) for view in views] == [SIZE, SIZE]
    assert views[0].entries[:SHARED] == views[1].entries[:SHARED]
    assert views[0].note(SIZE).checkpoint.root_hash != views[1].note(SIZE).checkpoint.root_hash
    return log, witnesses, views


def test_each_view_gets_one_witness_and_a_quorum_of_two_trusts_neither(split, tmp_path):
    log, (a, b), (first, second) = split
    # The honest start: both witnesses cosign the shared prefix.
    prefix = b.cosign(0, [], a.cosign(0, [], first.note(SHARED)))
    # The split: A is shown the first view, B the second; each cosigns what it sees.
    one = a.cosign(SHARED, first.proof(SHARED, SIZE), first.note(SIZE))
    two = b.cosign(SHARED, second.proof(SHARED, SIZE), second.note(SIZE))

    # Neither witness cosigns the other view, however it is asked.
    for witness, view in ((a, second), (b, first)):
        assert witness.add(SIZE, [], view.note(SIZE)).status_code == 409     # another root
        stale = witness.add(SHARED, view.proof(SHARED, SIZE), view.note(SIZE))
        assert stale.status_code == 409 and stale.data == b"%d\n" % SIZE
        grown = view.grown()
        assert witness.add(SIZE, grown.proof(SIZE, SIZE + 1),
                           grown.note(SIZE + 1)).status_code == 422
        assert len(witness.evidence()) == 2          # the conflicting requests, log-signed

    # A client trusting both witnesses with quorum 2: the prefix only, in either view.
    for name, witness in (("a", a), ("b", b)):
        added = keyclient(log.home.path, "witness", "add", witness.vkey.name,
                          format_verifier_key(witness.vkey), "--quorum", "1")
        assert added.exit_code == 0, added.output
    assert keyclient(log.home.path, "witness", "quorum", "2").exit_code == 0
    first.serve(log, prefix)
    synced = keyclient(log.home.path, "sync")
    assert synced.exit_code == 0, synced.output
    assert f"witnessed up to size {SHARED}" in synced.output

    for view, note in ((first, one), (second, two)):
        # Each view served with the cosignatures the log has for it, and the other
        # view's (which do not verify over this one).
        other = two if note is one else one
        served = with_cosignatures(note, other.signatures[1:])
        home = tmp_path / ("fresh-first" if view is first else "fresh-second")
        assert keyclient(home, "server", "add", log.server.url).exit_code == 0
        for witness in (a, b):
            keyclient(home, "witness", "add", witness.vkey.name,
                      format_verifier_key(witness.vkey), "--quorum", "1")
        assert keyclient(home, "witness", "quorum", "2").exit_code == 0
        view.serve(log, served)
        synced = keyclient(home, "sync")
        assert synced.exit_code == 0, synced.output
        assert f"the cosignature by {(b if view is first else a).vkey.name} does not verify:" \
            " not counted" in synced.output
        assert "no checkpoint of example.org is cosigned by 2 of its witnesses yet (its " \
            f"checkpoint of size {SIZE} carries valid cosignatures by 1 of the witnesses " \
            "trusted here): nothing of its log is trusted yet" in synced.output
        lookup = keyclient(home, "lookup", "alice@example.org")
        assert lookup.exit_code == 1 and "not yet witnessed" in lookup.output

    # The client that trusted the prefix is shown the first view, then the second:
    # the second contradicts what it verified, and the log-signed notes are kept.
    first.serve(log, one)
    assert keyclient(log.home.path, "sync").exit_code == 0
    second.serve(log, two)
    refused = keyclient(log.home.path, "sync")
    assert refused.exit_code != 0
    evidence = keyclient(log.home.path, "evidence").output
    assert refused.exit_code == 1
    assert "this server is cheating: it rewrote the history of its log" in refused.output
    assert "The 2 checkpoints it signed that prove it are kept as evidence" in refused.output
    evidence = json.loads(keyclient(log.home.path, "evidence", "--json").stdout)
    [kept] = evidence
    kept_notes = [parse_note(text) for text in kept["checkpoints"]]
    assert sorted(note.body for note in kept_notes) == sorted(
        [first.note(SIZE).body, second.note(SIZE).body])       # same size, two roots
    for note in kept_notes:
        verify_checkpoint(note, first.vkey)                      # both signed by the log key

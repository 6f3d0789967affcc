"""The log as the client checks it (§8, ``client.trust.checkpoints`` and the
session): after every sync the newest checkpoint, signed by the chain's log key,
whose root is the verified chain's and which extends the last one kept; light
lookups proven in a checkpoint's tree. A server that rewrites its history (one
entry swapped, or the log truncated and grown again) is caught by a client that
holds an older checkpoint, and both checkpoint notes are kept as evidence."""

import nacl.signing
import pytest
from click.testing import CliRunner

from client.protocol.checkpoint import Checkpoint, parse_note, sign_checkpoint
from client.protocol.encoding import b64encode
from client.protocol.errors import VerificationError
from client.protocol.merkle import MemoryTree, prove_consistency, prove_inclusion, tree_root
from client.protocol.note import parse_verifier_key
from client.protocol.signedjson import sign_json
from client.session import ServerSession, add_server
from client.store.home import Home
from client.trust.checkpoints import HistoryRewritten
from conftest import AppServer, at, now_ms
from keyserver.cli import main as keyserver_main
from keyserver.service.signing import read_log_key
from simulator import TamperFetcher
from tamper_proxy import Answer, extend, real_chain, relink

ROUTE_CHECKPOINT = "/v1/hashchain/checkpoint"


class Log:
    """An in-process keyserver, a client home that knows it, and the worker that
    makes checkpoints (past ``CHECKPOINT_INTERVAL`` each time)."""

    def __init__(self, tmp_path, monkeypatch):
        import client.transport.fetcher as fetching

        self.server = AppServer(tmp_path / "app")
        self.fetcher = TamperFetcher(self.server.app, self.server.url)
        monkeypatch.setattr(fetching, "default_fetcher", lambda: self.fetcher)
        self.home = Home(str(tmp_path / "home"))
        self.name = add_server(self.home, self.server.url)
        self.t = now_ms()

    def checkpoint(self, grow: int = 0) -> None:
        if grow:
            self.server.load_chain(grow)
        self.t += 60_000
        with at(self.t):
            result = CliRunner().invoke(keyserver_main, ["worker", "--once", "--instance",
                                                         str(self.server.instance)])
        assert result.exit_code == 0, result.output

    def session(self) -> ServerSession:
        return ServerSession(self.home, self.name, self.server.url)

    def log_vkey(self):
        return parse_verifier_key(self.fetcher.send("GET", "/v1/capabilities", {}, None)
                                  .json()["log_vkey"])


@pytest.fixture
def log(tmp_path, monkeypatch):
    return Log(tmp_path, monkeypatch)


class RewrittenLog:
    """The attack: the server holds its log key and serves a history of its own,
    ``forge(real entries)``: its own signed checkpoint of it and proofs that are
    right for it (consistency from any size, inclusion in lookups)."""

    def __init__(self, log: Log, forge):
        self.log, self.forge = log, forge
        self.signing_key = read_log_key(str(log.server.instance / "log.key"))
        self.notes = []

    def tree(self, request):
        return MemoryTree(self.forge(real_chain(request)))

    def note(self, tree) -> str:
        key = self.log.log_vkey()
        checkpoint = Checkpoint(key.name, tree.size, tree_root(tree.size, tree))
        text = sign_checkpoint(checkpoint, key, self.signing_key).text()
        self.notes.append(text)
        return text

    def __call__(self, request):
        if request.route == ROUTE_CHECKPOINT:
            note = self.note(self.tree(request))
            return Answer(200, {"Content-Type": "text/plain"}, note.encode())
        if request.route == "/v1/hashchain/proof/consistency":
            first, second = int(request.query["first"]), int(request.query["second"])
            hashes = prove_consistency(first, second, self.tree(request))
            return Answer.of_json({"first": first, "second": second,
                                   "hashes": [b64encode(h) for h in hashes]})
        if request.route.startswith("/v1/users/"):
            answer = request.forward().json()
            tree = self.tree(request)
            pos = answer["uid_message_reply"]["entry"]["hashchain_pos"]
            note = self.note(tree)
            answer["head"].update(tree_size=tree.size, checkpoint=note,
                                  root_hash=b64encode(parse_note(note).checkpoint.root_hash))
            answer["leaf_proof"] = {"leaf_index": pos, "tree_size": tree.size, "hashes": [
                b64encode(h) for h in prove_inclusion(pos, tree.size, tree)]}
            return Answer.of_json(answer)
        return request.forward()


def swap(pos):
    """One entry replaced (and every later one relinked), the log as long as before
    and grown by ten."""
    def forge(entries):
        entries = list(entries)
        entries[pos] = entries[pos][:40] + bytes(8) + entries[pos][48:]
        return extend(relink(entries, pos), len(entries) + 10)
    return forge


def truncate(size):
    """The log cut back to ``size`` entries and grown again, longer than before."""
    return lambda entries: extend(entries[:size], len(entries) + 10)


def evidence_of(log):
    [(_, what, _, notes)] = log.home.evidence(log.name)
    return what, notes


def test_sync_verifies_and_remembers_checkpoints(log):
    log.checkpoint(grow=5)
    session = log.session()
    session.sync()
    kept = parse_note(log.home.checkpoint(log.name)).checkpoint
    assert kept.tree_size == 6 == session.chain.length
    assert log.home.merkle_tree(log.name)[0] == 6
    log.checkpoint(grow=7)
    log.session().sync()
    assert parse_note(log.home.checkpoint(log.name)).checkpoint.tree_size == 13
    assert ("GET", "/v1/hashchain/proof/consistency?first=6&second=13") in log.fetcher.seen
    assert log.home.merkle_tree(log.name)[0] == 13
    assert log.home.evidence(log.name) == []


def test_sync_before_any_checkpoint_remembers_none(log):
    log.session().sync()
    assert log.home.checkpoint(log.name) is None


@pytest.mark.parametrize("forge", [swap(3), truncate(4)], ids=["swap", "truncate-regrow"])
def test_sync_catches_a_rewritten_history_with_both_checkpoints_kept(log, forge):
    log.checkpoint(grow=5)
    log.session().sync()
    held = log.home.checkpoint(log.name)
    log.checkpoint(grow=2)
    attack = log.fetcher.attack = RewrittenLog(log, forge)
    with pytest.raises(HistoryRewritten, match="this server is cheating"):
        log.session().sync()
    assert not log.fetcher.errors
    what, notes = evidence_of(log)
    assert notes == [held, attack.notes[-1]] and "rewrote the history" in what
    assert log.home.checkpoint(log.name) == held   # the rewritten one is not taken


def test_sync_catches_a_root_that_is_not_the_chains(log):
    """A checkpoint the local chain covers must have the chain's root, even the first."""
    log.checkpoint(grow=5)
    attack = log.fetcher.attack = RewrittenLog(log, lambda entries: swap(2)(entries)[:6])
    with pytest.raises(HistoryRewritten, match="not the one of the verified chain"):
        log.session().sync()
    assert evidence_of(log)[1] == attack.notes
    assert log.home.checkpoint(log.name) is None


def test_a_forged_signature_is_no_checkpoint(log):
    log.checkpoint(grow=2)

    def attack(request):
        if request.route == ROUTE_CHECKPOINT:
            note = request.forward().body.decode()
            return Answer(200, {"Content-Type": "text/plain"},
                          note.replace(note.split("\n")[1], "99", 1).encode())
        return request.forward()
    log.fetcher.attack = attack
    with pytest.raises(VerificationError, match="no valid signature"):
        log.session().sync()
    assert log.home.checkpoint(log.name) is None and log.home.evidence(log.name) == []


def register_alice_and_bob(log):
    """alice at position 1, 3 more entries, a checkpoint of size 5; bob at 5 and a
    checkpoint of size 6."""
    from conftest import ServerUserActions

    users = ServerUserActions(log.server)
    users.register("alice@example.org")
    log.checkpoint(grow=3)
    users.register("bob@example.org")
    log.checkpoint()
    return users


@pytest.fixture
def registered(log):
    return register_alice_and_bob(log)


def test_light_lookup_without_a_chain(log, registered):
    found = log.session().light_lookup("bob@example.org")
    assert found.log_key_from == "capabilities"
    assert found.found.message.identity == "bob@example.org"
    assert found.checkpoint.tree_size == 6 and found.found.pos == 5
    assert parse_note(log.home.checkpoint(log.name)).checkpoint.tree_size == 6
    assert not any(path.startswith("/v1/hashchain?") for _, path in log.fetcher.seen)


def test_light_lookup_of_an_entry_no_checkpoint_covers_yet_says_what_to_do(log, registered):
    registered.register("carol@example.org")            # position 6, tree size 6
    with pytest.raises(VerificationError, match="^no checkpoint covers position 6 yet: try "
                                                "again later, or sync the whole chain$"):
        log.session().light_lookup("carol@example.org")
    log.checkpoint()
    assert log.session().light_lookup("carol@example.org").found.pos == 6


def test_light_lookup_after_a_sync_uses_the_chains_log_key(log, registered):
    log.session().sync()
    assert log.session().light_lookup("alice@example.org").log_key_from == "chain"


@pytest.mark.parametrize("forge", [swap(1), truncate(2)], ids=["swap", "truncate-regrow"])
def test_light_lookup_catches_a_rewritten_history(log, registered, forge):
    session = log.session()
    session.light_lookup("alice@example.org")
    held = log.home.checkpoint(log.name)
    attack = log.fetcher.attack = RewrittenLog(log, forge)
    with pytest.raises(HistoryRewritten) as caught:
        log.session().light_lookup("bob@example.org")
    assert not log.fetcher.errors
    assert evidence_of(log)[1] == [held, attack.notes[-1]]
    # What the user reads: which two checkpoints contradict each other, and why.
    assert str(caught.value) == (
        "this server is cheating: it rewrote the history of its log (§8): the checkpoint of"
        " tree size 16 it signed now is not consistent with the one of tree size 6 it signed"
        " before (the tree of size 16 does not extend the tree of size 6: the log was"
        " rewritten)")


def test_light_lookup_without_a_chain_refuses_a_reply_no_listed_key_signed(log, registered):
    stranger = nacl.signing.SigningKey.generate()

    def attack(request):
        answer = request.forward()
        if request.route.startswith("/v1/users/"):
            body = answer.json()
            reply = body["uid_message_reply"]
            del reply["signatures"]
            body["uid_message_reply"] = sign_json(reply, log.name, "ed25519:x", stranger)
            return Answer.of_json(body)
        return answer
    log.fetcher.attack = attack
    # The user's only explanation (``keyclient lookup --light``).
    with pytest.raises(VerificationError, match="^the reply for position 5 is not signed by a key"
                                                " the server's capabilities list$"):
        log.session().light_lookup("bob@example.org")


def bad_hash(proof):
    proof["hashes"][0] = b64encode(bytes(32))


def other_leaf(proof):
    proof["leaf_index"] -= 1


def other_tree(proof):
    proof["tree_size"] -= 1


@pytest.mark.parametrize("tamper, message", [
    (bad_hash, "is not in the tree"),
    (other_leaf, "^the inclusion proof is for leaf 4 of tree size 6, not 5 of 6$"),
    (other_tree, "^the inclusion proof is for leaf 5 of tree size 5, not 5 of 6$"),
], ids=["bad-hash", "other-leaf", "other-tree"])
def test_light_lookup_rejects_a_bad_inclusion_proof(log, registered, tamper, message):
    def attack(request):
        answer = request.forward()
        if request.route.startswith("/v1/users/"):
            body = answer.json()
            tamper(body["leaf_proof"])
            return Answer.of_json(body)
        return answer
    log.fetcher.attack = attack
    with pytest.raises(VerificationError, match=message):
        log.session().light_lookup("bob@example.org")

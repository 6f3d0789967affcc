"""The client side of witnessed checkpoints (§8.1, §7.3): ``keyclient witness``
configures a server's witnesses and quorum; a sync, a lookup and a light lookup
then trust the log only as far as the newest checkpoint that ``quorum`` of those
witnesses validly cosigned (``?quorum=K``), and say so when newer entries exist.
Forged, unknown, repeated and future-dated cosignatures do not count; an entry
dated more than 5 minutes after a witness saw a tree containing it is the server
cheating, with the reply and the cosigned note kept as evidence.

The server's witnessing side is not needed: the test answers ``?quorum=K`` itself
(``Cosigning``), with the server's stored checkpoint signed by the instance's log
key and cosigned by test witnesses' keys, through the in-process ``TamperFetcher``.
"""

from __future__ import annotations

import json

import nacl.signing
import pytest

from client.protocol.checkpoint import Note, parse_note
from client.protocol.cosignature import cosign, witness_vkey
from client.protocol.note import format_verifier_key
from client.protocol.wire import ReplyEntry, format_uid_message_reply, parse_uid_message_reply
from client.session import NotYetWitnessed
from client.trust.evidence import EntryAfterCosignature
from client.trust.witnesses import (COSIGNATURE_FUTURE_MS, COSIGNED_SLACK_MS, check_cosigners,
                                    check_entry_times)
from conftest import ServerUserActions, at, keyclient, now_ms, with_cosignatures
from tamper_proxy import Answer
from test_checkpoints import ROUTE_CHECKPOINT, Log, register_alice_and_bob


class Witness:
    """A witness's key (§8.1), as ``keyserver witness key`` would print it."""

    def __init__(self, name: str):
        self.signing_key = nacl.signing.SigningKey.generate()
        self.vkey = witness_vkey(name, self.signing_key)
        self.name, self.text = name, format_verifier_key(self.vkey)

    def cosign(self, note: Note, timestamp: int | None = None, body: bytes | None = None):
        """Its cosignature line of ``note`` (or of another ``body``) at ``timestamp``
        (seconds; now by default)."""
        return cosign(note.body if body is None else body, self.vkey, self.signing_key,
                      now_ms() // 1000 if timestamp is None else timestamp)


class Cosigning:
    """The server's ``?quorum=K`` answer, made by the test: its stored checkpoint of
    ``size`` (None: the real answer, a 404 while no witness cosigns) with the lines
    ``lines(note)`` appended."""

    def __init__(self, size: int | None = None, lines=lambda note: []):
        self.size, self.lines = size, lines
        self.notes: list[str] = []

    def __call__(self, request):
        if request.route != ROUTE_CHECKPOINT or "quorum" not in request.query \
                or self.size is None:
            return request.forward()
        note = parse_note(request.forward(f"{ROUTE_CHECKPOINT}?tree_size={self.size}").body)
        text = with_cosignatures(note, self.lines(note)).text()
        self.notes.append(text)
        return Answer(200, {"Content-Type": "text/plain"}, text.encode())


A, B, C = "a.example/witness", "b.example/witness", "c.example/witness"


@pytest.fixture
def log(tmp_path, monkeypatch):
    return Log(tmp_path, monkeypatch)


@pytest.fixture
def witnesses():
    return {name: Witness(name) for name in (A, B, C)}


def run(log, *args):
    return keyclient(log.home.path, *args)


def trust(log, witnesses, *names, quorum=None):
    """``keyclient witness add`` for each of ``names``, the last with ``--quorum``."""
    for name in names:
        last = name == names[-1] and quorum is not None
        added = run(log, "witness", "add", name, witnesses[name].text,
                    *(["--quorum", str(quorum)] if last else []))
        assert added.exit_code == 0, added.output


@pytest.fixture
def registered(log):
    return register_alice_and_bob(log)


# --- Configuration --------------------------------------------------------------------

def test_witness_commands_add_list_remove_and_quorum(log, witnesses):
    listed = run(log, "witness", "list")
    assert "no witnesses: split views cannot be detected" in listed.output
    added = run(log, "witness", "add", A, witnesses[A].text)
    assert added.exit_code == 0 and "quorum 1 of 1" in added.output
    added = run(log, "witness", "add", B, witnesses[B].text, "--quorum", "2")
    assert added.exit_code == 0 and "quorum 2 of 2" in added.output
    [entry] = json.loads(run(log, "witness", "list", "--json").stdout)
    assert entry["server"] == log.name and entry["quorum"] == 2
    assert entry["witnesses"] == [{"name": A, "key": witnesses[A].text},
                                  {"name": B, "key": witnesses[B].text}]
    assert entry["witnessed_size"] == 0 and entry["witnesses_relied_on"] == []

    too_many = run(log, "witness", "quorum", "3")
    assert too_many.exit_code == 1 and "must be 0 to 2" in too_many.output
    refused = run(log, "witness", "remove", A)
    assert refused.exit_code == 1 and "Lower it first" in refused.output
    assert log.home.quorum(log.name) == 2 and len(log.home.witnesses(log.name)) == 2
    assert run(log, "witness", "quorum", "1").exit_code == 0
    removed = run(log, "witness", "remove", A)
    assert removed.exit_code == 0 and "quorum 1 of 1" in removed.output
    unknown = run(log, "witness", "remove", A)
    assert unknown.exit_code == 1 and f"no witness {A}" in unknown.output
    assert [key.name for key in log.home.witnesses(log.name)] == [B]


def test_witness_add_refuses_bad_keys_clearly(log, witnesses):
    log_key = format_verifier_key(log.log_vkey())
    other = Witness(A)
    hex_part = witnesses[A].text.split("+")[1]
    cases = {
        "a log's checkpoint key (type 0x01)": (log.log_vkey().name, log_key),
        "the key hash does not match": (A, witnesses[A].text.replace(
            hex_part, f"{int(hex_part, 16) ^ 1:08x}")),
        f"the key is named {B!r}, not {A!r}": (A, witnesses[B].text),
        "expected <name>+<8 hex digits>+<base64 key>": (A, "not a key"),
    }
    for why, (name, key) in cases.items():
        result = run(log, "witness", "add", name, key)
        assert result.exit_code == 1 and why in result.output, (why, result.output)
    assert run(log, "witness", "add", A, witnesses[A].text).exit_code == 0
    twice = run(log, "witness", "add", A, other.text)
    assert twice.exit_code == 1 and "already trusted" in twice.output
    same_key = run(log, "witness", "add", "alias.example/witness", format_verifier_key(
        witness_vkey("alias.example/witness", witnesses[A].signing_key)))
    assert same_key.exit_code == 1 and f"already trusted for {log.name} as witness {A}" \
        in same_key.output
    assert log.home.witnesses(log.name) == [witnesses[A].vkey] and log.home.quorum(log.name) == 1


def test_without_witnesses_split_views_are_named_once_per_server(log, registered):
    first = run(log, "sync")
    assert first.exit_code == 0 and "no witness is configured" in first.output
    assert "not witnessed (no quorum of witnesses is required)" in first.output
    for args in (("sync",), ("lookup", "alice@example.org"),
                 ("lookup", "--light", "bob@example.org")):
        again = run(log, *args)
        assert again.exit_code == 0 and "no witness is configured" not in again.output, args
    assert ("GET", f"{ROUTE_CHECKPOINT}?quorum=1") not in log.fetcher.seen


# --- Trust up to the quorum -----------------------------------------------------------

def test_the_log_is_trusted_up_to_the_older_quorum_checkpoint(log, witnesses, registered):
    """The newest checkpoint (6) has one cosignature, the older one (5) two: bob, at
    position 5, is not yet witnessed; alice is, and the lookup says up to where."""
    trust(log, witnesses, A, B, quorum=2)
    log.fetcher.attack = Cosigning(5, lambda note: [witnesses[A].cosign(note),
                                                    witnesses[B].cosign(note)])
    synced = run(log, "sync")
    assert synced.exit_code == 0, synced.output
    assert f"witnessed up to size 5 by {A}, {B} (quorum 2)" in synced.output
    assert ("GET", f"{ROUTE_CHECKPOINT}?quorum=2") in log.fetcher.seen
    assert parse_note(log.home.witnessed(log.name)).checkpoint.tree_size == 5

    bob = run(log, "lookup", "bob@example.org")
    assert bob.exit_code == 1 and "bob@example.org: not yet witnessed" in bob.output
    assert "1 newer entries of example.org are not yet cosigned by 2 witness(es); showing" \
        " the log up to size 5" in bob.output
    as_json = json.loads(run(log, "lookup", "bob@example.org", "--json").stdout)
    assert as_json["found"] is False and as_json["not_yet_witnessed"] == [5]

    alice = json.loads(run(log, "lookup", "alice@example.org", "--json").stdout)
    assert alice["status"] == "current" and alice["witnessed_size"] == 5
    assert alice["witnesses_relied_on"] == [A, B] and alice["quorum"] == 2

    light = run(log, "lookup", "--light", "bob@example.org")
    assert light.exit_code == 1 and "latest entry (position 5) is not yet witnessed" \
        in light.output
    light = json.loads(run(log, "lookup", "--light", "alice@example.org", "--json").stdout)
    assert light["witnessed_size"] == 5 and light["witnesses_relied_on"] == [A, B]
    assert ("GET", "/v1/hashchain/proof/inclusion?index=1&tree_size=5") in log.fetcher.seen

    listed = json.loads(run(log, "server", "list", "--json").stdout)
    assert listed[0]["witnessed_size"] == 5


def test_once_the_quorum_cosigned_the_newest_the_entry_is_shown(log, witnesses, registered):
    trust(log, witnesses, A, B, quorum=2)
    attack = log.fetcher.attack = Cosigning(5, lambda note: [witnesses[A].cosign(note),
                                                             witnesses[B].cosign(note)])
    assert run(log, "lookup", "bob@example.org").exit_code == 1
    attack.size = 6
    bob = run(log, "lookup", "bob@example.org")
    assert bob.exit_code == 0 and "not yet" not in bob.output, bob.output
    # A server serving an older quorum checkpoint again takes nothing back.
    attack.size = 5
    assert run(log, "lookup", "bob@example.org").exit_code == 0
    assert parse_note(log.home.witnessed(log.name)).checkpoint.tree_size == 6


def test_without_any_quorum_checkpoint_nothing_is_trusted(log, witnesses, registered):
    trust(log, witnesses, A)
    alice = run(log, "lookup", "alice@example.org")   # the real server: 404 for quorum 1
    assert alice.exit_code == 1
    assert "no checkpoint of example.org is cosigned by 1 of its witnesses yet" in alice.output
    assert "nothing of its log is trusted yet" in alice.output
    assert "alice@example.org: not yet witnessed" in alice.output
    assert log.home.witnessed(log.name) is None


def forged_by_another_key(witnesses, note):
    impostor = nacl.signing.SigningKey.generate()
    return cosign(note.body, witnesses[B].vkey, impostor, now_ms() // 1000)


def flip(line):
    """A cosignature line with its signature's last bit flipped."""
    return type(line)(line.name, line.key_hash, line.signature[:-1] + bytes(
        [line.signature[-1] ^ 1]))


def flipped(witnesses, note):
    return flip(witnesses[B].cosign(note))


def over_another_root(witnesses, note):
    other = note.body.replace(note.body.split(b"\n")[2], b"A" * 43 + b"=")
    return witnesses[B].cosign(note, body=other)


@pytest.mark.parametrize("second", [
    forged_by_another_key, flipped, over_another_root,
    lambda witnesses, note: witnesses[C].cosign(note),                    # unknown witness
    lambda witnesses, note: witnesses[A].cosign(note, now_ms() // 1000 - 1),   # A again
], ids=["another-key", "bytes-flipped", "another-root", "unknown-witness", "same-witness-twice"])
def test_cosignatures_that_do_not_count(log, witnesses, registered, second):
    trust(log, witnesses, A, B, quorum=2)
    session = log.session()
    told = []
    session.notice = told.append
    log.fetcher.attack = Cosigning(6, lambda note: [witnesses[A].cosign(note),
                                                    second(witnesses, note)])
    session.sync()
    assert not log.fetcher.errors
    assert log.home.witnessed(log.name) is None and session.witnessing.tree_size == 0
    assert any("carries valid cosignatures by 1 of the witnesses trusted here" in line
               for line in told), told
    assert session.trusted_lookup("alice@example.org").result is None


def test_two_valid_cosignatures_count(log, witnesses, registered):
    """The control of the test above: the same answer with B's real cosignature."""
    trust(log, witnesses, A, B, quorum=2)
    log.fetcher.attack = Cosigning(6, lambda note: [witnesses[A].cosign(note),
                                                    witnesses[B].cosign(note)])
    log.session().sync()
    assert log.session().trusted_lookup("alice@example.org").result is not None


# --- Time bounds ------------------------------------------------------------------------

def test_a_cosignature_dated_in_the_future_is_refused_and_named(log, witnesses, registered):
    trust(log, witnesses, A)
    now = now_ms() // 1000 * 1000
    log.fetcher.attack = Cosigning(6, lambda note: [witnesses[A].cosign(
        note, (now + COSIGNATURE_FUTURE_MS) // 1000 + 1)])
    with at(now):
        synced = run(log, "sync")
    assert synced.exit_code == 0, synced.output
    assert f"the cosignature by {A} is dated" in synced.output
    assert "in this client's future: not counted" in synced.output
    assert log.home.witnessed(log.name) is None


def test_the_future_bound_at_its_boundary(log, witnesses, registered):
    note = parse_note(log.fetcher.send("GET", ROUTE_CHECKPOINT, {}, None).body)
    now = now_ms() // 1000 * 1000
    keys = [witnesses[A].vkey]
    at_bound = with_cosignatures(note, [witnesses[A].cosign(
        note, (now + COSIGNATURE_FUTURE_MS) // 1000)])
    assert check_cosigners(at_bound, keys, now).cosigners == {
        A: (now + COSIGNATURE_FUTURE_MS) // 1000}
    beyond = with_cosignatures(note, [witnesses[A].cosign(
        note, (now + COSIGNATURE_FUTURE_MS) // 1000 + 1)])
    refused = check_cosigners(beyond, keys, now)
    assert refused.cosigners == {} and A in refused.refused[0]
    assert refused.refused[0].endswith("more than 5 minutes in this client's future")
    # A witness dating ahead hides no other witness listed after it.
    both = with_cosignatures(beyond, [witnesses[B].cosign(note, now // 1000)])
    assert check_cosigners(both, keys + [witnesses[B].vkey], now).cosigners == {
        B: now // 1000}


def test_only_a_cosignature_that_fails_is_refused_and_it_hides_no_later_witness(
        log, witnesses, registered):
    """A trusted witness that has not cosigned (yet) is simply not counted; one whose
    line is there but does not verify is named; neither keeps a witness listed after
    it from counting."""
    note = parse_note(log.fetcher.send("GET", ROUTE_CHECKPOINT, {}, None).body)
    now = now_ms() // 1000 * 1000
    keys = [witnesses[A].vkey, witnesses[B].vkey]
    only_b = with_cosignatures(note, [witnesses[B].cosign(note, now // 1000)])
    checked = check_cosigners(only_b, keys, now)
    assert checked.cosigners == {B: now // 1000} and checked.refused == ()
    a_broken = with_cosignatures(only_b, [flip(witnesses[A].cosign(note, now // 1000))])
    checked = check_cosigners(a_broken, keys, now)
    assert checked.cosigners == {B: now // 1000}
    assert checked.refused == (f"the cosignature by {A} does not verify",)
    # One key trusted under two names counts once, and hides no witness after it.
    both = with_cosignatures(note, [witnesses[A].cosign(note, now // 1000),
                                    witnesses[B].cosign(note, now // 1000)])
    again = witness_vkey("a2.example/witness", witnesses[A].signing_key)
    assert set(check_cosigners(both, [witnesses[A].vkey, again, witnesses[B].vkey],
                               now).cosigners) == {A, B}


def reply_at(pos: int, ts: int):
    return parse_uid_message_reply(format_uid_message_reply(
        ReplyEntry(bytes(72), bytes(153), pos, ts), {"example.org": {"ed25519:a": "sig"}}))


def test_entry_times_against_the_cosignature_at_the_boundary(log, witnesses, registered):
    note = parse_note(log.fetcher.send("GET", ROUTE_CHECKPOINT, {}, None).body)   # size 6
    cosigned_s = now_ms() // 1000
    cosigned = check_cosigners(with_cosignatures(note, [
        witnesses[A].cosign(note, cosigned_s + 60), witnesses[B].cosign(note, cosigned_s)]),
        [witnesses[A].vkey, witnesses[B].vkey], now_ms())
    bound = cosigned_s * 1000 + COSIGNED_SLACK_MS   # the earliest cosignature's
    check_entry_times([reply_at(5, bound), reply_at(6, bound + 10**9)], cosigned)  # 6: outside
    # The evidence names the witness whose cosignature bounds the time: the earliest.
    with pytest.raises(EntryAfterCosignature, match=f"witness {B} cosigned") as caught:
        check_entry_times([reply_at(5, bound + 1)], cosigned)
    assert caught.value.notes == (cosigned.note.text(),)
    assert caught.value.replies[0].entry.ts == bound + 1


@pytest.fixture
def bob_at_a_round_time(log):
    """alice at 1, bob at 5 registered at a whole second ``log.bob_ts``, checkpoint 6."""
    users = ServerUserActions(log.server)
    users.register("alice@example.org")
    log.checkpoint(grow=3)
    log.bob_ts = (now_ms() // 1000 + 1) * 1000   # after the entries before
    with at(log.bob_ts):
        users.register("bob@example.org")
    log.checkpoint()


@pytest.mark.parametrize("light", [False, True], ids=["lookup", "light"])
def test_an_entry_dated_after_its_cosignature_is_cheating(log, witnesses, bob_at_a_round_time,
                                                          light):
    trust(log, witnesses, A)
    cosigned_s = (log.bob_ts - COSIGNED_SLACK_MS) // 1000
    attack = log.fetcher.attack = Cosigning(6, lambda note: [witnesses[A].cosign(note,
                                                                                 cosigned_s)])
    lookup = ["lookup", *(["--light"] if light else []), "bob@example.org"]
    with at(log.bob_ts + 1000, tick=True):   # bob's keys are valid from bob_ts
        at_bound = run(log, *lookup)    # entry.ts == cosignature + 5 minutes exactly
        assert at_bound.exit_code == 0, at_bound.output
        attack.lines = lambda note: [witnesses[A].cosign(note, cosigned_s - 1)]
        log.home.set_quorum(log.name, 1)   # forget the witnessed tree: check it anew
        cheating = run(log, *lookup)
    assert cheating.exit_code == 1 and "this server is cheating: it dated the entry at " \
        "position 5" in cheating.output, cheating.output
    assert "1 signed replies and 1 checkpoints it signed" in cheating.output
    [(_, what, [reply], [note])] = log.home.evidence(log.name)
    assert reply["entry"]["hashchain_pos"] == 5 and reply["entry"]["ts"] == log.bob_ts
    assert note == attack.notes[-1] and "more than 5 minutes after witness" in what
    listed = run(log, "evidence")
    assert "[1 signed replies, positions 5; 1 signed checkpoints]" in listed.output
    [piece] = json.loads(run(log, "evidence", "--json").stdout)
    assert piece["replies"] == [reply] and piece["checkpoints"] == [note]


def test_light_lookup_not_yet_witnessed_is_its_own_error(log, witnesses, registered):
    trust(log, witnesses, A)
    log.fetcher.attack = Cosigning(5, lambda note: [witnesses[A].cosign(note)])
    with pytest.raises(NotYetWitnessed, match="position 5"):
        log.session().light_lookup("bob@example.org")
    assert log.session().light_lookup("alice@example.org").witnessing.tree_size == 5


def test_one_key_under_two_names_counts_once(log, witnesses, registered):
    """A cosignature does not sign the witness's name: one key could cosign under
    two names, and count twice if names were what is counted."""
    note = parse_note(log.fetcher.send("GET", ROUTE_CHECKPOINT, {}, None).body)
    alias = Witness("alias.example/witness")
    alias.signing_key, alias.vkey = witnesses[A].signing_key, witness_vkey(
        alias.name, witnesses[A].signing_key)
    both = with_cosignatures(note, [witnesses[A].cosign(note), alias.cosign(note)])
    assert len(check_cosigners(both, [witnesses[A].vkey, alias.vkey], now_ms()).cosigners) == 1
    assert len(check_cosigners(both, [alias.vkey], now_ms()).cosigners) == 1

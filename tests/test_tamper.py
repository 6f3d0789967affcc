"""End to end: the ``keyclient`` CLI against a malicious keyserver (§7.3, §7.5,
§11.2, §11.3, §13).

A proxy (``tamper_proxy``) stands in front of a real ``keyserver run`` process
and rewrites chosen answers; the CLI is pointed at the proxy. Every attack must
end in a clear error message and a non-zero exit status, and must change
nothing the client keeps: the recorded chain length, the bytes of
``entries.bin``, the wallet and the key files. Each attack is built so that only
the check under test can catch it (links recomputed around a bad TYPE byte or a
short entry, replies re-signed with the real server key when only the position
is a lie), so every test fails if its detection is removed.

The servers are module-wide (starting one takes a second): ``shared`` serves the
sync, lookup and register tests, ``rotated`` the key-rotation tests.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from pathlib import Path

import msgpack
import nacl.signing
import pytest
from click.testing import CliRunner

from client.cli import main
from client.protocol.encoding import b64encode
from client.clock import now_ms
from client.protocol.hashchain import ENTRY_SIZE
from client.store.home import Home
from conftest import LiveServer, ServerUserActions, init_live_instance, keyserver_command
from tamper_proxy import (JSON, MSGPACK, Answer, ChainView, TamperProxy, capabilities_changed,
                          extend, fabricated_entry, link, relink, replies_changed, resign)

SERVER = "example.org"
HOUR_MS = 3600 * 1000


# --- Servers, client homes, state ---------------------------------------------------

def server_signing_keys(server: LiveServer):
    from keyserver.service.signing import parse_keys

    return parse_keys((server.instance / "signing.key").read_text())


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A real server with alice at position 1 and 12 more identities after her,
    plus tokens for the tests' wallets."""
    path = tmp_path_factory.mktemp("shared") / "live"
    server = LiveServer(path, init_live_instance(path))
    try:
        server.alice_pos = ServerUserActions(server).register("alice@example.org")[
            "entry"]["hashchain_pos"]
        subprocess.run(keyserver_command("chain", "load", "--instance", str(path), "-n", "12"),
                       check=True, capture_output=True)
        server.tokens = [value.split('"')[1] for value in server.mint(64)]
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(shared):
    with TamperProxy(shared.url) as proxy:
        yield proxy
    assert not proxy.errors, proxy.errors


def keyclient(home: Path, *args: str):
    return CliRunner().invoke(main, ["--home", str(home), *args])


def ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def refused(result, *fragments: str) -> str:
    """A clean refusal: exit status 1 with an ``Error:`` message naming ``fragments``,
    not a crash with a traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Error: " in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    return result.output


def client_home(tmp_path: Path, proxy: TamperProxy, token: str) -> Path:
    """A home that knows the server (through the proxy) and holds one token."""
    home = tmp_path / "home"
    ok(keyclient(home, "server", "add", proxy.url))
    ok(keyclient(home, "tokens", "add", token))
    return home


def entries_file(home: Path) -> Path:
    return home / "chains" / SERVER / "entries.bin"


def snapshot(home: Path) -> dict:
    """Everything an attack must leave alone. ``entries.bin`` is read first: opening
    the chain (``Home.chain``, any command) truncates unrecorded leftovers."""
    data = entries_file(home).read_bytes()
    keys = home / "keys"
    return {
        "entries.bin": (len(data), hashlib.sha256(data).hexdigest()),
        "recorded length": Home(str(home)).chain(SERVER).length,
        "server list": ok(keyclient(home, "server", "list")),
        "tokens list": ok(keyclient(home, "tokens", "list")),
        "key files": {p.name: p.read_bytes() for p in sorted(keys.iterdir())}
        if keys.exists() else {},
    }


def own_identities(home: Path) -> set[str]:
    """Identities the client recorded as its own (in whatever table it keeps them)."""
    db = sqlite3.connect(home / "state.sqlite")
    try:
        tables = [name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'own%'")]
        assert tables, "no table of own identities"
        return {identity for table in tables
                for (identity,) in db.execute(f"SELECT identity FROM {table}")}
    finally:
        db.close()


def fetch_real_chain(server: LiveServer) -> list[bytes]:
    import requests

    answer = requests.get(f"{server.url}/v1/hashchain?start=0&count=10000",
                          headers={"Accept": MSGPACK}, timeout=10)
    return msgpack.unpackb(answer.content)["entries"]


def synced_home(tmp_path, proxy, shared, length: int) -> Path:
    """A home that has honestly synced the first ``length`` entries (the server's
    chain as it was when it had that many)."""
    home = client_home(tmp_path, proxy, shared.tokens.pop())
    proxy.attack = ChainView(lambda real: real[:length])
    assert f"{length} new entries, {length} verified" in ok(keyclient(home, "sync"))
    proxy.attack = None
    return home


# --- 1. sync: tampered chunks (§7.5) ------------------------------------------------

SYNCED = 5          # entries the client holds before the attack
BAD = 8             # attacked position, in the middle of the chunk SYNCED..head


def flip_byte(chain):
    entry = bytearray(chain[BAD])
    entry[100] ^= 0x01          # inside CrUID: H no longer matches
    chain[BAD] = bytes(entry)
    return chain


def wrong_type(chain):
    chain[BAD] = chain[BAD][:32] + b"\x02" + chain[BAD][33:]
    return relink(chain, BAD)   # links intact: only the TYPE check can object


def truncated(chain):
    chain[BAD] = link(chain[BAD][32:-1], chain[BAD - 1][:32])
    return relink(chain, BAD + 1)   # 152 bytes that link: only the length check objects


def dropped(chain):
    del chain[BAD]              # entry BAD+1 now sits at BAD and does not link
    return chain


TAMPERS = {
    flip_byte: f"entry {BAD}: hash does not link to entry {BAD - 1}",
    wrong_type: f"entry {BAD}: type 0x02, not 0x01",
    truncated: f"entry {BAD}: 152 bytes, not 153",
    dropped: f"entry {BAD}: hash does not link to entry {BAD - 1}",
}


# --- 1b. sync: a different history for an already synced client --------------------

FORK_AT = 2         # below SYNCED: the client holds the original of this entry


def fork(chain):
    """History rewritten from FORK_AT with recomputed links, longer than before."""
    chain[FORK_AT] = fabricated_entry(chain[FORK_AT - 1][:32])
    return extend(relink(chain, FORK_AT), len(chain) + 2)


def rollback(chain):
    """History cut back below what the client verified."""
    return chain[:FORK_AT + 1]


def same_length_fork(chain):
    """History rewritten from FORK_AT, exactly as long as what the client holds: no
    new entry links wrongly, only the head the server names gives it away."""
    chain = chain[:SYNCED]
    chain[FORK_AT] = fabricated_entry(chain[FORK_AT - 1][:32])
    return relink(chain, FORK_AT)


HISTORIES = {
    fork: f"entry {SYNCED}: hash does not link to entry {SYNCED - 1}",
    rollback: (f"head {FORK_AT}", "behind", f"{SYNCED}"),
    same_length_fork: (f"head at position {SYNCED - 1} is not the entry", "a fork"),
}


@pytest.mark.parametrize("encoding", [MSGPACK, JSON], ids=["msgpack", "json"])
@pytest.mark.parametrize("attack", [*TAMPERS, *HISTORIES], ids=lambda attack: attack.__name__)
def test_sync_rejects_a_bad_chain(shared, proxy, tmp_path, attack, encoding):
    """A tampered chunk after the synced entries, or a different history for them:
    refused with the position, nothing kept, and an honest sync works afterwards."""
    real = fetch_real_chain(shared)
    home = synced_home(tmp_path, proxy, shared, SYNCED)
    before = snapshot(home)
    proxy.attack = ChainView(attack, encoding)
    expected = {**TAMPERS, **HISTORIES}[attack]
    refused(keyclient(home, "sync"), "the chain failed verification and was rejected whole",
            *(expected if isinstance(expected, tuple) else (expected,)))
    assert snapshot(home) == before
    proxy.attack = None
    assert f"{len(real) - SYNCED} new entries, {len(real)} verified" in ok(keyclient(home, "sync"))
    assert entries_file(home).read_bytes() == b"".join(real)


def test_sync_failing_in_a_later_chunk_keeps_no_bytes(shared, proxy, tmp_path):
    """The client asks for chunks of 10000: a first chunk of 10000 well-linked
    entries verifies, the next one does not. Nothing of either may stay."""
    real = fetch_real_chain(shared)
    home = synced_home(tmp_path, proxy, shared, SYNCED)
    before = snapshot(home)
    bad = SYNCED + 10000 + 2

    def forge(chain):
        chain = extend(chain, bad + 3)
        chain[bad] = chain[bad][:100] + bytes([chain[bad][100] ^ 1]) + chain[bad][101:]
        return chain

    proxy.attack = ChainView(forge)
    refused(keyclient(home, "sync"), f"entry {bad}: hash does not link to entry {bad - 1}")
    assert snapshot(home) == before
    proxy.attack = None
    assert f"{len(real)} verified" in ok(keyclient(home, "sync"))
    assert entries_file(home).read_bytes() == b"".join(real)


# --- 2. lookup: a reply signed by an unknown key (§7.3, §11.3) -----------------------

def resign_position(pos: int, signing_key, key_id: str, **changes):
    """An attack re-signing the reply of chain position ``pos`` in its bundle."""

    def change(reply):
        reply["entry"].update(changes)
        signed = resign(reply, signing_key, key_id)
        reply.clear()
        reply.update(signed)

    return replies_changed(change, pos)


def impostor(name: str, change=lambda capabilities: None):
    """Capabilities naming ``name`` (and ``change``d), signed by a key they list
    themselves: what anyone can make, so ``server add`` cannot trust the name beyond
    its form, nor a sync the key."""
    forged = nacl.signing.SigningKey.generate()

    def rewrite(capabilities):
        capabilities["server_name"] = name
        capabilities["sigpubkeys"] = {"ed25519:evil": b64encode(bytes(forged.verify_key))}
        change(capabilities)
        return resign(capabilities, forged, "ed25519:evil", name)

    return capabilities_changed(rewrite)


def test_sync_refuses_capabilities_signed_by_an_unknown_key(shared, proxy, tmp_path):
    """The limits and prices the client acts on must be signed by the server key the
    chain names; a forged key listed in the capabilities themselves does not count."""
    home = synced_home(tmp_path, proxy, shared, SYNCED)
    before = snapshot(home)
    proxy.attack = impostor(SERVER, lambda capabilities: capabilities["limits"].update(
        reclaim_grace_ms=0))
    refused(keyclient(home, "sync"), "the capabilities document is not signed by the server key")
    assert snapshot(home)["tokens list"] == before["tokens list"]
    refused(keyclient(home, "tokens", "buy", "VOUCHER"),
            "the capabilities document is not signed by the server key")
    assert snapshot(home)["tokens list"] == before["tokens list"]


CAPABILITY_CHANGES = {
    "no-limits": lambda c: c.pop("limits"),
    "limits-a-string": lambda c: c.update(limits="x"),
    "lifetime-a-string": lambda c: c["limits"].update(max_uid_lifetime_ms="x"),
    "negative-grace": lambda c: c["limits"].update(reclaim_grace_ms=-1),
    "no-keyinit-lifetime": lambda c: c["limits"].pop("max_keyinit_lifetime_ms"),
    "prices-a-list": lambda c: c.update(token_prices=[1]),
    "price-a-string": lambda c: c["token_prices"].update(create_uid="1"),
    "uris-a-string": lambda c: c.update(keyinitrepository_uris="http://x"),
    "empty": lambda c: c.clear(),
}


@pytest.mark.parametrize("signed", [False, True], ids=["as-sent", "signed-by-the-server"])
@pytest.mark.parametrize("change", CAPABILITY_CHANGES.values(), ids=CAPABILITY_CHANGES.keys())
def test_malformed_capabilities_stop_a_command_at_its_start(shared, proxy, tmp_path, change,
                                                            signed):
    """Even signed by the real server key, capabilities the client cannot act on are
    refused before anything is done, never a crash halfway through."""
    home = synced_home(tmp_path, proxy, shared, SYNCED)
    before = snapshot(home)
    key = server_signing_keys(shared)[-1]

    def rewrite(capabilities):
        change(capabilities)
        return resign(capabilities, key.signing_key, key.key_id) if signed else capabilities

    proxy.attack = capabilities_changed(rewrite)
    for command in (["sync"], ["lookup", "alice@example.org"]):
        refused(keyclient(home, *command), "capabilities")
    with TamperProxy(shared.url) as other:
        other.attack = proxy.attack
        refused(keyclient(tmp_path / "new", "server", "add", other.url), "capabilities")
    proxy.attack = None
    assert snapshot(home) == before


def test_a_reply_without_its_encrypted_message_is_malformed(shared, proxy, tmp_path):
    home = synced_home(tmp_path, proxy, shared, SYNCED)

    def change(reply):
        del reply["entry"]["uid_message_encrypted"]

    proxy.attack = replies_changed(change)
    refused(keyclient(home, "lookup", "alice@example.org"), "is malformed",
            "uid_message_encrypted")


@pytest.mark.parametrize("name", ["../chains/example.org", "../../outside", "a/b.example", ".",
                                  "Example.org", "example.org:8000", "a." * 122 + "org"])
def test_a_server_name_that_is_not_a_dns_name_is_refused(shared, proxy, tmp_path, name):
    """The name becomes a folder of the home: as a path it could truncate another
    server's verified chain, or write outside the home."""
    home = synced_home(tmp_path, proxy, shared, SYNCED)
    before = snapshot(home)
    with TamperProxy(shared.url) as evil:
        evil.attack = impostor(name)
        refused(keyclient(home, "server", "add", evil.url), "not a server name")
        assert not evil.errors, evil.errors
    assert snapshot(home) == before
    assert not (tmp_path / "outside").exists()


def test_a_known_server_moves_only_when_asked(shared, proxy, tmp_path):
    home = synced_home(tmp_path, proxy, shared, SYNCED)
    before = snapshot(home)
    with TamperProxy(shared.url) as evil:
        evil.attack = impostor(SERVER)
        refused(keyclient(home, "server", "add", evil.url), f"{SERVER} is already known at",
                "--move")
        assert not evil.errors, evil.errors
    assert snapshot(home) == before
    with TamperProxy(shared.url) as moved:       # the real server at a new address
        assert "added example.org" in ok(keyclient(home, "server", "add", moved.url, "--move"))
        assert moved.url in ok(keyclient(home, "server", "list"))
        ok(keyclient(home, "sync"))
        assert ("GET", "/v1/capabilities") in moved.seen


@pytest.mark.parametrize("key_id", ["ed25519:evil", "real"], ids=["new-key-id", "real-key-id"])
@pytest.mark.parametrize("whose", ["alice", "keyserver"])
def test_lookup_refuses_a_reply_signed_by_an_unknown_key(shared, proxy, tmp_path, whose, key_id):
    pos = shared.alice_pos if whose == "alice" else 0
    if key_id == "real":       # the id the server really uses, with another key behind it
        key_id = server_signing_keys(shared)[-1].key_id
    home = client_home(tmp_path, proxy, shared.tokens.pop())
    ok(keyclient(home, "sync"))
    before = snapshot(home)
    proxy.attack = resign_position(pos, nacl.signing.SigningKey.generate(), key_id)
    refused(keyclient(home, "lookup", "alice@example.org"),
            f"the reply for position {pos} is not signed by the server key")
    assert snapshot(home) == before
    proxy.attack = None
    assert "alice@example.org: current" in ok(keyclient(home, "lookup", "alice@example.org"))


# --- 3. lookup after a key rotation: expired and not-yet-valid keys (§11.2, §11.3) ---

def rotate_server_key(instance: Path) -> int:
    """Rotate the stopped server's key as §11.2 says: append an update of
    keyserver@<name> with the new sigkey, signed by the old one, then make the new
    key the signing key (the old one stays in the file). Returns the rotation's ts."""
    from keyserver import create_app
    from keyserver.http.context import key_file, policy
    from keyserver.service import serverkeys
    from keyserver.storage import db

    app = create_app(instance_path=str(instance))
    with app.app_context():
        now = now_ms()
        serverkeys.rotate(db.get_db(), key_file(), policy(), 3600 * 1000, now)
    return now


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    """alice registered under the first key; the key rotated; bob registered under
    the new one."""
    path = tmp_path_factory.mktemp("rotated") / "live"
    port = init_live_instance(path)
    before = LiveServer(path, port)
    try:
        alice_pos = ServerUserActions(before).register("alice@example.org")["entry"]["hashchain_pos"]
    finally:
        before.stop()
    rotation_ts = rotate_server_key(path)
    server = LiveServer(path, port)
    server.alice_pos, server.rotation_ts = alice_pos, rotation_ts
    try:
        server.old_key, server.new_key = server_signing_keys(server)
        bob = ServerUserActions(server).register("bob@example.org")
        server.bob_pos = bob["entry"]["hashchain_pos"]
        assert server.new_key.key_id in bob["signatures"][SERVER]
        server.tokens = [value.split('"')[1] for value in server.mint(5)]
        yield server
    finally:
        server.stop()


#: A reply by the previous key counts while a key document says the key was valid at
#: the reply's time (§11.3). During the overlap the document lists it as current, but
#: only as of when the client fetched it: a reply dated later (here, in the future)
#: cannot be shown to fall within the overlap.
NO_DOCUMENT_SAYS = "no key document of example.org says its signing key was valid"
NOT_THE_POSITIONS = "is not signed by the server key"

ROTATION_CASES = [
    # (identity, signed by, entry.ts after the rotation, refused with)
    pytest.param("bob", None, None, None, id="bob-honest-new-key"),
    pytest.param("alice", None, None, None, id="alice-honest-old-key-before-rotation"),
    pytest.param("bob", "old", 1, None, id="bob-old-key-within-overlap"),
    pytest.param("bob", "old", 2 * HOUR_MS, NO_DOCUMENT_SAYS, id="bob-old-key-expired"),
    pytest.param("alice", "new", None, NOT_THE_POSITIONS, id="alice-new-key-not-yet-valid"),
]


@pytest.mark.parametrize("who, signer, after, refuse", ROTATION_CASES)
def test_lookup_after_a_key_rotation(rotated, tmp_path, who, signer, after, refuse):
    identity = f"{who}@example.org"
    pos = rotated.bob_pos if who == "bob" else rotated.alice_pos
    with TamperProxy(rotated.url) as proxy:
        home = client_home(tmp_path, proxy, rotated.tokens.pop())
        ok(keyclient(home, "sync"))
        before = snapshot(home)
        if signer is not None:
            key = rotated.old_key if signer == "old" else rotated.new_key
            changes = {} if after is None else {"ts": rotated.rotation_ts + after}
            proxy.attack = resign_position(pos, key.signing_key, key.key_id, **changes)
        result = keyclient(home, "lookup", identity)
        if refuse:
            refused(result, f"the reply for position {pos}" +
                    (" " if refuse == NOT_THE_POSITIONS else ": ") + refuse)
        else:
            assert f"{identity}: current" in ok(result)
            assert f"positions:  {pos}" in result.output
        assert snapshot(home) == before
        assert not proxy.errors, proxy.errors
        assert (signer is None) or any(path.startswith("/v1/uids/bundle/")
                                       for _, path in proxy.seen)


# --- 4. register: the reply and the chain disagree (§13 step 3) ---------------------

@pytest.fixture
def cheap_keystore(monkeypatch):
    import client.store.keystore as keystore

    monkeypatch.setattr(keystore, "DEFAULT_KDF", keystore.KdfParams.cheapest())
    monkeypatch.setenv("KEYCLIENT_PASSPHRASE", "correct horse")


class RegisterAttack:
    """Forwards the registration (the server really appends it and spends the
    token), then lies in the reply with ``rewrite(attack, reply) -> reply``, and/or
    serves the chain as ``forge(real_chain, promised_pos)`` once it has replied."""

    def __init__(self, server: LiveServer, rewrite=None, forge=None):
        self.key = server_signing_keys(server)[-1]     # the real server key
        self.rewrite, self.pos = rewrite, None
        self.view = ChainView(lambda chain: forge(chain, self.pos) if self.pos is not None
                              and forge else chain, other=self.put)

    def put(self, request):
        answer = request.forward()
        if request.method != "PUT" or answer.status >= 300:
            return answer
        reply = answer.json()
        self.pos = reply["entry"]["hashchain_pos"]
        if self.rewrite is None:
            return answer
        return Answer(answer.status, answer.headers,
                      json.dumps(self.rewrite(self, reply)).encode())

    def __call__(self, request):
        return self.view(request)

    def sign(self, reply):
        return resign(reply, self.key.signing_key, self.key.key_id)


def test_a_redirected_registration_is_no_success(shared, proxy, tmp_path, cheap_keystore):
    """keyclient follows no redirect and takes none for success, even one that
    carries the real signed reply: the server registered the identity and spent the
    token, so the token must not come back as available, nor count as spent on the
    word of a 3xx; it is kept as unknown."""
    identity = "redirected@example.org"
    home = client_home(tmp_path, proxy, shared.tokens.pop())
    ok(keyclient(home, "sync"))

    def redirect(request):
        answer = request.forward()
        if request.method != "PUT":
            return answer
        assert answer.status == 201, answer.body
        return Answer(302, {**answer.headers, "Location": proxy.url + request.path},
                      answer.body)

    proxy.attack = redirect
    refused(keyclient(home, "register", identity, "--yes"),
            f"/v1/users/{identity} answered HTTP 302: ")
    proxy.attack = None
    assert identity not in own_identities(home)
    assert f"{SERVER}: 0 available, 1 unknown" in ok(keyclient(home, "tokens", "list"))


def unknown_signer(attack, reply):
    return resign(reply, nacl.signing.SigningKey.generate(), attack.key.key_id)


def promises_next_position(attack, reply):
    reply["entry"]["hashchain_pos"] += 1
    return attack.sign(reply)


def promises_taken_position(attack, reply):
    reply["entry"]["hashchain_pos"] -= 1
    return attack.sign(reply)


def promises_a_negative_position(attack, reply):
    reply["entry"]["hashchain_pos"] = -1
    return attack.sign(reply)


def names_another_entry(attack, reply):
    reply["entry"]["hashchain_entry"] = b64encode(fabricated_entry(bytes(32)))
    return attack.sign(reply)


def other_entry_on_chain(chain, pos):
    """The chain holds a different entry at the promised position (links recomputed)."""
    if len(chain) > pos:
        chain[pos] = fabricated_entry(chain[pos - 1][:32])
        chain = relink(chain, pos)
    return chain


REGISTER_ATTACKS = [
    pytest.param(unknown_signer, None, "the reply for position {pos} is not signed by the "
                 "server key", id="unknown-signer"),
    pytest.param(promises_next_position, None,
                 "the chain does not hold our entry at position {next}", id="promises-next"),
    pytest.param(promises_taken_position, None,
                 "the chain does not hold our entry at position {previous}", id="promises-taken"),
    pytest.param(promises_a_negative_position, None, "malformed reply: hashchain_pos",
                 id="promises-negative"),
    pytest.param(names_another_entry, None, "the reply's chain entry is not our",
                 id="names-another-entry"),
    pytest.param(None, other_entry_on_chain, "the chain holds another entry at position {pos} "
                 "than the server's signed reply", id="chain-holds-another-entry"),
]


@pytest.mark.parametrize("rewrite, forge, message", REGISTER_ATTACKS)
def test_register_refuses_a_lying_server(shared, proxy, tmp_path, cheap_keystore, request,
                                         rewrite, forge, message):
    identity = f"victim-{request.node.callspec.id}@example.org"     # letters: already normal
    home = client_home(tmp_path, proxy, shared.tokens.pop())
    ok(keyclient(home, "sync"))
    attack = proxy.attack = RegisterAttack(shared, rewrite, forge)
    result = keyclient(home, "register", identity, "--yes")
    assert attack.pos is not None, result.output          # the server did register it
    refused(result, message.format(pos=attack.pos, next=attack.pos + 1,
                                   previous=attack.pos - 1))
    proxy.attack = None
    # The registration is not recorded as ours, and no key but the pending signing key
    # is on disk: the outcome is unknown (a 2xx whose reply did not check out), so it
    # is kept for the next command to settle from the chain; the escrow key never is.
    [kept] = (home / "keys").iterdir()
    assert kept.name.endswith(".sigkey.next.key")
    assert identity not in own_identities(home)
    # The server spent the token: it must not come back as available.
    assert f"{SERVER}: 0 available, 1 spent" in ok(keyclient(home, "tokens", "list"))
    # Whatever chain the client kept is the server's real one: nothing forged, no
    # unrecorded leftovers. (Waiting for the promised position legitimately syncs
    # the real, verified entries, our own among them; a forged entry that
    # contradicts the signed reply in hand must not be kept, §7.5.)
    data = entries_file(home).read_bytes()
    assert len(data) == Home(str(home)).chain(SERVER).length * ENTRY_SIZE
    assert data == b"".join(fetch_real_chain(shared))[:len(data)]

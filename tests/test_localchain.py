"""The client's local chain (§7.3, §7.5): persisted sync, crash recovery, and the
exhaustive identity search with its k1 cache and per-identity index."""

import hashlib
import subprocess

import msgpack
import pytest

from client.api import KeyserverAPI
from client.protocol.errors import ChainError
from client.fetcher import HTTPFetcher, Response
from client.protocol.hashchain import ENTRY_SIZE
from client.localchain import LocalChain, open_state
from conftest import keyserver_command


@pytest.fixture
def state(tmp_path):
    return open_state(str(tmp_path / "state.sqlite"))


def load(server, count):
    subprocess.run(keyserver_command("chain", "load", "--instance", str(server.instance),
                                     "-n", str(count)), check=True, capture_output=True)


def test_sync_persists_and_continues(live_server, state, tmp_path):
    load(live_server, 30)
    api = KeyserverAPI(live_server.url)
    chain = LocalChain(state, str(tmp_path / "c"), "example.org")
    assert chain.sync(api, chunk_size=7) == 31
    load(live_server, 4)
    reopened = LocalChain(state, str(tmp_path / "c"), "example.org")
    assert reopened.length == 31
    assert reopened.sync(api, chunk_size=7) == 4
    assert len(reopened.read()) == 35 * ENTRY_SIZE
    assert reopened.sync(api) == 0


def test_crash_leftovers_are_truncated(live_server, state, tmp_path):
    load(live_server, 5)
    chain = LocalChain(state, str(tmp_path / "c"), "example.org")
    chain.sync(KeyserverAPI(live_server.url))
    with open(chain.entries_path, "ab") as handle:
        handle.write(b"x" * 200)   # written, never recorded as verified
    reopened = LocalChain(state, str(tmp_path / "c"), "example.org")
    assert len(reopened.read()) == 6 * ENTRY_SIZE
    with open(reopened.entries_path, "rb") as handle:
        assert len(handle.read()) == 6 * ENTRY_SIZE


class Tampering(HTTPFetcher):
    """Serves the real chain with one entry's byte flipped."""

    def __init__(self, position):
        super().__init__()
        self.position = position

    def _fetch(self, request, max_length):
        response = super()._fetch(request, max_length)
        if "/v1/hashchain?" not in request.url:
            return response
        body = msgpack.unpackb(response.body)
        index = self.position - body["first_pos"]
        if 0 <= index < len(body["entries"]):
            entry = bytearray(body["entries"][index])
            entry[100] ^= 1
            body["entries"][index] = bytes(entry)
        return Response(response.status, response.headers, msgpack.packb(body))


def test_tampered_chain_is_rejected_whole(live_server, state, tmp_path):
    load(live_server, 20)
    chain = LocalChain(state, str(tmp_path / "c"), "example.org")
    with pytest.raises(ChainError) as info:
        chain.sync(KeyserverAPI(live_server.url, Tampering(13)), chunk_size=5)
    assert info.value.position == 13
    assert LocalChain(state, str(tmp_path / "c"), "example.org").length == 0
    assert chain.sync(KeyserverAPI(live_server.url)) == 21


def test_search_finds_every_entry_and_indexes_it(live_server, state, tmp_path, users_live):
    users_live.register("alice@example.org")
    load(live_server, 10)
    users_live.register("bob@example.org")
    chain = LocalChain(state, str(tmp_path / "c"), "example.org")
    chain.sync(KeyserverAPI(live_server.url))
    [(alice_pos, _)] = chain.search("alice@example.org")
    assert alice_pos == 1
    assert [pos for pos, _ in chain.search("keyserver@example.org")] == [0]
    assert chain.search("carol@example.org") == []
    users_live.register("carol@example.org")
    chain.sync(KeyserverAPI(live_server.url))
    assert [pos for pos, _ in chain.search("carol@example.org")] == [13]
    with open(chain.k1_path, "rb") as handle:
        assert len(handle.read()) == 14 * 32


def expected_k1s(chain):
    data = chain.read()
    return b"".join(hashlib.sha512(data[i * ENTRY_SIZE + 33:i * ENTRY_SIZE + 41]).digest()[:32]
                    for i in range(chain.length))


def test_parallel_search_fills_a_k1_cache_with_a_gap(live_server, state, tmp_path, users_live,
                                                     monkeypatch):
    """A k1 file cut short (a crash mid-write) is completed by the next search, in
    parallel, and only the missing values are computed."""
    import client.localchain as localchain

    users_live.register("alice@example.org")
    load(live_server, 40)
    chain = LocalChain(state, str(tmp_path / "c"), "example.org")
    chain.sync(KeyserverAPI(live_server.url))
    chain.search("nobody@example.org")
    with open(chain.k1_path, "ab") as handle:
        handle.truncate(10 * 32 + 7)
    users_live.register("bob@example.org")
    load(live_server, 30)
    chain.sync(KeyserverAPI(live_server.url))
    with open(chain.k1_path, "rb") as handle:
        assert len(handle.read()) == 10 * 32 + 7
    monkeypatch.setattr(localchain, "PARALLEL_MIN", 10)
    monkeypatch.setattr(localchain.os, "cpu_count", lambda: 3)
    assert [pos for pos, _ in chain.search("alice@example.org")] == [1]
    assert [pos for pos, _ in chain.search("bob@example.org")] == [42]
    with open(chain.k1_path, "rb") as handle:
        assert handle.read() == expected_k1s(chain)


def test_search_many_scans_each_identity_from_where_it_stopped(live_server, state, tmp_path,
                                                               users_live, monkeypatch):
    import client.localchain as localchain

    users_live.register("alice@example.org")
    load(live_server, 20)
    chain = LocalChain(state, str(tmp_path / "c"), "example.org")
    chain.sync(KeyserverAPI(live_server.url))
    assert [pos for pos, _ in chain.search("alice@example.org")] == [1]      # scanned 0..21
    users_live.register("bob@example.org")
    users_live.register("alice@example.org".replace("alice", "carol"))
    load(live_server, 20)
    chain.sync(KeyserverAPI(live_server.url))
    scanned = []
    original = localchain._scan
    monkeypatch.setattr(localchain, "_scan", lambda block, k1s, identity, first: (
        scanned.append((identity, first, first + len(block) // ENTRY_SIZE))
        or original(block, k1s, identity, first)))
    monkeypatch.setattr(localchain.os, "cpu_count", lambda: 1)   # scans in this process
    found = chain.search_many(["alice@example.org", "bob@example.org", "carol@example.org",
                               "alice@example.org"])
    assert {identity: [pos for pos, _ in matches] for identity, matches in found.items()} == {
        "alice@example.org": [1], "bob@example.org": [22], "carol@example.org": [23]}
    # alice only over the new entries, the others over everything, each once
    assert scanned == [("alice@example.org", 22, 44), ("bob@example.org", 0, 44),
                       ("carol@example.org", 0, 44)]
    reads = []
    original_read = chain.read
    monkeypatch.setattr(chain, "read", lambda start=0: reads.append(start) or
                        original_read(start))
    scanned.clear()
    assert chain.search_many(["bob@example.org", "keyserver@example.org"])[
        "keyserver@example.org"] == [(0, chain.search("keyserver@example.org")[0][1])]
    assert scanned == [("keyserver@example.org", 0, 44)] and reads == [0]
    load(live_server, 5)
    chain.sync(KeyserverAPI(live_server.url))
    reads.clear()
    chain.search("bob@example.org")
    assert reads == [44]          # only the new entries are read from disk

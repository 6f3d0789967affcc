"""The exhaustive identity search over a local chain (§7.3), with its k1 cache and
per-identity index (``client.store.search``)."""

import hashlib
from client.protocol.hashchain import ENTRY_SIZE
from client.session import sync_chain
from client.store.localchain import LocalChain
from client.store.search import ChainSearch
from client.transport.api import KeyserverAPI


def test_search_finds_every_entry_and_indexes_it(app_server, state, tmp_path, users_app):
    users_app.register("alice@example.org")
    app_server.load_chain(10)
    users_app.register("bob@example.org")
    chain = LocalChain(state, str(tmp_path / "c"), "example.org")
    searcher = ChainSearch(chain)
    sync_chain(KeyserverAPI(app_server.url), chain)
    [(alice_pos, _)] = searcher.search("alice@example.org")
    assert alice_pos == 1
    assert [pos for pos, _ in searcher.search("keyserver@example.org")] == [0]
    assert searcher.search("carol@example.org") == []
    users_app.register("carol@example.org")
    sync_chain(KeyserverAPI(app_server.url), chain)
    assert [pos for pos, _ in searcher.search("carol@example.org")] == [13]
    with open(searcher.k1_path, "rb") as handle:
        assert len(handle.read()) == 14 * 32


def expected_k1s(chain):
    data = chain.read()
    return b"".join(hashlib.sha512(data[i * ENTRY_SIZE + 33:i * ENTRY_SIZE + 41]).digest()[:32]
                    for i in range(chain.length))


def test_parallel_search_fills_a_k1_cache_with_a_gap(app_server, state, tmp_path, users_app,
                                                     monkeypatch):
    """A k1 file cut short (a crash mid-write) is completed by the next search, in
    parallel, and only the missing values are computed."""
    import client.store.search as search_module

    users_app.register("alice@example.org")
    app_server.load_chain(40)
    chain = LocalChain(state, str(tmp_path / "c"), "example.org")
    searcher = ChainSearch(chain)
    sync_chain(KeyserverAPI(app_server.url), chain)
    searcher.search("nobody@example.org")
    with open(searcher.k1_path, "ab") as handle:
        handle.truncate(10 * 32 + 7)
    users_app.register("bob@example.org")
    app_server.load_chain(30)
    sync_chain(KeyserverAPI(app_server.url), chain)
    with open(searcher.k1_path, "rb") as handle:
        assert len(handle.read()) == 10 * 32 + 7
    monkeypatch.setattr(search_module, "PARALLEL_MIN", 10)
    monkeypatch.setattr(search_module.os, "cpu_count", lambda: 3)
    assert [pos for pos, _ in searcher.search("alice@example.org")] == [1]
    assert [pos for pos, _ in searcher.search("bob@example.org")] == [42]
    with open(searcher.k1_path, "rb") as handle:
        assert handle.read() == expected_k1s(chain)


def test_search_many_scans_each_identity_from_where_it_stopped(app_server, state, tmp_path,
                                                               users_app, monkeypatch):
    import client.store.search as search_module

    users_app.register("alice@example.org")
    app_server.load_chain(20)
    chain = LocalChain(state, str(tmp_path / "c"), "example.org")
    searcher = ChainSearch(chain)
    sync_chain(KeyserverAPI(app_server.url), chain)
    assert [pos for pos, _ in searcher.search("alice@example.org")] == [1]      # scanned 0..21
    users_app.register("bob@example.org")
    users_app.register("alice@example.org".replace("alice", "carol"))
    app_server.load_chain(20)
    sync_chain(KeyserverAPI(app_server.url), chain)
    scanned = []
    original = search_module._scan
    monkeypatch.setattr(search_module, "_scan", lambda block, k1s, identity, first: (
        scanned.append((identity, first, first + len(block) // ENTRY_SIZE))
        or original(block, k1s, identity, first)))
    monkeypatch.setattr(search_module.os, "cpu_count", lambda: 1)   # scans in this process
    found = searcher.search_many(["alice@example.org", "bob@example.org", "carol@example.org",
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
    assert searcher.search_many(["bob@example.org", "keyserver@example.org"])[
        "keyserver@example.org"] == [(0, searcher.search("keyserver@example.org")[0][1])]
    assert scanned == [("keyserver@example.org", 0, 44)] and reads == [0]
    app_server.load_chain(5)
    sync_chain(KeyserverAPI(app_server.url), chain)
    reads.clear()
    searcher.search("bob@example.org")
    assert reads == [44]          # only the new entries are read from disk

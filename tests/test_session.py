"""The fetch -> verify -> persist loop (``client.session``): ``download_chain``
chunk by chunk until the head, whatever the chunks' sizes; ``sync_chain`` persisted
and continued, a tampered chain rejected whole."""

import threading

import msgpack
import pytest

from client.protocol.errors import ChainError
from client.protocol.hashchain import ENTRY_SIZE
from client.protocol.wire import Chunk
from client.session import download_chain, sync_chain
from client.store.localchain import LocalChain
from client.transport.api import KeyserverAPI
from client.trust.chainstate import ChainState
from conftest import make_chain
from simulator import TamperFetcher
from tamper_proxy import Answer


class Chunks:
    """Serves ``chain``, each answer cut to at most the next of ``sizes``, with the
    head at ``head_pos`` (default: the chain's last position)."""

    def __init__(self, chain, sizes, head_pos=None):
        self.chain, self.sizes, self.requests = chain, list(sizes), []
        self.head_pos = len(chain) - 1 if head_pos is None else head_pos

    def fetch_hashchain(self, start, count, use_msgpack=True):
        self.requests.append(start)
        size = min(count, self.sizes.pop(0) if self.sizes else count)
        return Chunk(start, self.head_pos, self.chain[start:start + size])


def download(api, chunk_size):
    state = ChainState()
    got = [entry for entries in download_chain(api, state, chunk_size=chunk_size)
           for entry in entries]
    return got, state


def test_complete_chunks_until_a_short_one():
    chain = make_chain(25)
    api = Chunks(chain, [])
    got, state = download(api, 10)
    assert got == chain and state.length == 25 and api.requests == [0, 10, 20]


def test_a_short_chunk_below_its_head_is_continued():
    """An append landed between the server's two reads: ask again for the rest."""
    chain = make_chain(12)
    api = Chunks(chain, [4])
    got, _ = download(api, 10)
    assert got == chain and api.requests == [0, 4]


def test_an_empty_chunk_below_its_head_is_a_chain_error():
    chain = make_chain(5)
    api = Chunks(chain, [], head_pos=9)
    with pytest.raises(ChainError, match="names head 9 but serves no entry at 5"):
        download(api, 10)


def test_the_next_chunk_is_fetched_while_one_is_verified_and_dropped_on_failure():
    chain = make_chain(35)
    chain[13] = chain[13][:100] + bytes([chain[13][100] ^ 1]) + chain[13][101:]
    api = Chunks(chain, [])
    with pytest.raises(ChainError, match="entry 13"):
        download(api, 10)
    # 10 was fetched after the first chunk was handed over, 20 while 10 was verified
    # (unless the failure cancelled it first), then nothing more.
    assert sorted(api.requests) in ([0, 10], [0, 10, 20])


def test_no_thread_of_the_download_runs_when_the_indexer_forks(app_server, state, tmp_path,
                                                               monkeypatch):
    """A process forked while another thread holds a lock can hang on it: the
    indexer's worker forks before the download starts its fetching thread."""
    from client.store import search as search_module

    app_server.load_chain(40)
    chain = LocalChain(state, str(tmp_path / "c"), "example.org")
    before = set(threading.enumerate())
    at_fork = []
    real = search_module._Indexer.__init__

    def recording(self, identities):
        at_fork.append(set(threading.enumerate()) - before)
        real(self, identities)

    monkeypatch.setattr(search_module._Indexer, "__init__", recording)
    searches = search_module.ChainSearch(chain)
    assert sync_chain(KeyserverAPI(app_server.url), chain, chunk_size=7, search=searches,
                      index=["alice@example.org"]) == 41
    assert at_fork == [set()]
    assert searches.search("alice@example.org") == []


def test_sync_persists_and_continues(app_server, state, tmp_path):
    app_server.load_chain(30)
    api = KeyserverAPI(app_server.url)
    chain = LocalChain(state, str(tmp_path / "c"), "example.org")
    assert sync_chain(api, chain, chunk_size=7) == 31
    app_server.load_chain(4)
    reopened = LocalChain(state, str(tmp_path / "c"), "example.org")
    assert reopened.length == 31
    assert sync_chain(api, reopened, chunk_size=7) == 4
    assert len(reopened.read()) == 35 * ENTRY_SIZE
    assert sync_chain(api, reopened) == 0


def flip_entry(position):
    """An attack serving the real chain with one entry's byte flipped."""

    def attack(request):
        answer = request.forward()
        if request.route != "/v1/hashchain":
            return answer
        body = msgpack.unpackb(answer.body)
        index = position - body["first_pos"]
        if 0 <= index < len(body["entries"]):
            entry = bytearray(body["entries"][index])
            entry[100] ^= 1
            body["entries"][index] = bytes(entry)
        return Answer(answer.status, answer.headers, msgpack.packb(body))

    return attack


def test_tampered_chain_is_rejected_whole(app_server, state, tmp_path):
    app_server.load_chain(20)
    chain = LocalChain(state, str(tmp_path / "c"), "example.org")
    tampering = TamperFetcher(app_server.app, app_server.url)
    tampering.attack = flip_entry(13)
    with pytest.raises(ChainError) as info:
        sync_chain(KeyserverAPI(app_server.url, tampering), chain, chunk_size=5)
    assert info.value.position == 13 and tampering.errors == []
    assert LocalChain(state, str(tmp_path / "c"), "example.org").length == 0
    assert sync_chain(KeyserverAPI(app_server.url), chain) == 21



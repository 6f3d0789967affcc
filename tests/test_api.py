"""``KeyserverAPI``'s JSON answers, and ``download_chain``: chunk by chunk until the
head, whatever the chunks' sizes."""

import pytest

from client.api import KeyserverAPI, download_chain
from client.chainstate import ChainState
from client.protocol.errors import ChainError, TransportError
from client.fetcher import Fetcher, Response
from client.protocol.hashchain import ZERO_HASH, format_entry
from client.protocol.wire import Chunk


class OneBody(Fetcher):
    """Answers every request 200 with ``body``."""

    def __init__(self, body):
        self.body = body

    def _fetch(self, request, max_length):
        return Response(200, {"content-type": "application/json"}, self.body)


@pytest.mark.parametrize("call", [KeyserverAPI.capabilities, KeyserverAPI.fetch_head,
                                  lambda api: api.fetch_uid("AAAA")],
                         ids=["capabilities", "head", "uid"])
@pytest.mark.parametrize("body", [b"{", b"[" * 200_000], ids=["truncated", "nested"])
def test_an_answer_that_does_not_parse_is_not_json(call, body):
    with pytest.raises(TransportError, match="answer is not JSON"):
        call(KeyserverAPI("http://ks.test", OneBody(body)))


def make_chain(length):
    entries, prev = [], ZERO_HASH
    for n in range(length):
        entries.append(format_entry(prev, n.to_bytes(8, "big"), "a@example.org", bytes(32)))
        prev = entries[-1][:32]
    return entries


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
    chain = make_chain(25)
    chain[3] = chain[3][:100] + bytes([chain[3][100] ^ 1]) + chain[3][101:]
    api = Chunks(chain, [])
    with pytest.raises(ChainError, match="entry 3"):
        download(api, 10)
    assert sorted(api.requests) == [0, 10]   # 10 was prefetched, then nothing more

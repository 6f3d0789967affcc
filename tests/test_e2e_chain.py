"""End to end: ``keyserver init`` and ``keyserver run`` as processes on a free
local port, the chain grown by ``keyserver chain load`` while the server runs,
and downloaded in chunks by the client library in both encodings."""

import subprocess

import pytest
import requests

from client.session import download_chain
from client.transport.api import KeyserverAPI
from client.trust.chainstate import ChainState
from client.protocol.errors import BadRequest, ChainError
from client.protocol.hashchain import search_identity
from conftest import keyserver_command


@pytest.fixture
def grown_server(live_server):
    subprocess.run(keyserver_command("chain", "load", "--instance", str(live_server.instance),
                                     "-n", "45"), check=True, capture_output=True)
    return live_server


@pytest.mark.parametrize("use_msgpack", [True, False], ids=["msgpack", "json"])
def test_download_in_chunks_and_verify(grown_server, use_msgpack):
    api = KeyserverAPI(grown_server.url)
    state = ChainState()
    chunks = list(download_chain(api, state, chunk_size=7, use_msgpack=use_msgpack))
    assert [len(c) for c in chunks] == [7] * 6 + [4]
    assert state.length == 46
    entries = [e for c in chunks for e in c]
    assert [pos for pos, _ in search_identity(entries, "keyserver@example.org")] == [0]
    head = api.fetch_head()
    assert head.pos == 45 and state.last_hash == entries[-1][:32]


def test_incremental_download_continues_from_state(grown_server):
    api = KeyserverAPI(grown_server.url)
    state = ChainState()
    first = list(download_chain(api, state, chunk_size=100))
    subprocess.run(keyserver_command("chain", "load", "--instance", str(grown_server.instance),
                                     "-n", "5"), check=True, capture_output=True)
    more = list(download_chain(api, state, chunk_size=100))
    assert sum(map(len, first)) == 46 and sum(map(len, more)) == 5
    assert state.length == 51


def test_chain_from_another_server_is_rejected(grown_server, tmp_path):
    """A state verified against one chain refuses a different chain's continuation."""
    api = KeyserverAPI(grown_server.url)
    state = ChainState()
    list(download_chain(api, state, chunk_size=10))
    forged = ChainState(length=10, last_hash=bytes(32))
    with pytest.raises(ChainError) as info:
        list(download_chain(api, forged, chunk_size=10))
    assert info.value.position == 10


def test_errors_over_http(grown_server):
    with pytest.raises(BadRequest):
        KeyserverAPI(grown_server.url).fetch_hashchain(0, 10001)
    answer = requests.get(grown_server.url + "/v1/nothing")
    assert answer.status_code == 404 and answer.json()["errcode"] == "NOT_FOUND"


def test_cache_revalidation_over_http(grown_server):
    url = grown_server.url + "/v1/hashchain?start=0&count=10"
    first = requests.get(url, headers={"Accept": "application/msgpack"})
    again = requests.get(url, headers={"Accept": "application/msgpack",
                                       "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304

"""The keyserver's HTTP API (§12) as methods named after the spec's operations."""

from __future__ import annotations

import json
from typing import Iterator

from .chainstate import MSGPACK, ChainState, Chunk, parse_chunk
from .errors import TransportError
from .fetcher import Fetcher, Request, RequestsFetcher

#: Per-entry size bound of a chunk answer (base64 plus quotes and comma).
_ENTRY_WIRE_BYTES = 210
MAX_JSON_BYTES = 4 * 1024 * 1024


class KeyserverAPI:
    """One keyserver, reached at ``base_url`` through ``fetcher``."""

    def __init__(self, base_url: str, fetcher: Fetcher | None = None):
        self.base_url = base_url.rstrip("/")
        self.fetcher = fetcher or RequestsFetcher()

    def _get_json(self, path: str, max_length: int = MAX_JSON_BYTES) -> dict:
        body = self.fetcher.get_bytes(self.base_url + path, max_length)
        try:
            obj = json.loads(body)
        except ValueError as exc:
            raise TransportError(f"{path}: answer is not JSON") from exc
        if not isinstance(obj, dict):
            raise TransportError(f"{path}: answer is not a JSON object")
        return obj

    def capabilities(self) -> dict:
        """KeyRepository.Capabilities (signature checked by the caller's keyring)."""
        return self._get_json("/v1/capabilities")

    def fetch_hashchain(self, start: int, count: int, *, use_msgpack: bool = True) -> Chunk:
        """KeyHashchain.FetchHashChain: entries ``start..start+count-1`` (fewer at the head)."""
        accept = MSGPACK if use_msgpack else "application/json"
        response = self.fetcher.fetch(
            Request("GET", f"{self.base_url}/v1/hashchain?start={start}&count={count}",
                    {"Accept": accept}),
            count * _ENTRY_WIRE_BYTES + 1024)
        return parse_chunk(response.body, response.content_type)

    def fetch_head(self) -> dict:
        """KeyHashchain.FetchLastHashChain."""
        return self._get_json("/v1/hashchain/head")


def download_chain(api: KeyserverAPI, state: ChainState, *, chunk_size: int = 10000,
                   use_msgpack: bool = True) -> Iterator[list[bytes]]:
    """Fetch and verify the chain from ``state.length`` to the head, chunk by chunk,
    yielding each verified chunk's entries (the caller persists them).

    It stops at the first short chunk: only those come from the head, whereas a
    complete chunk may come from a cache with an older ``head_pos``."""
    while True:
        chunk = api.fetch_hashchain(state.length, chunk_size, use_msgpack=use_msgpack)
        entries = state.accept(chunk)
        if entries:
            yield entries
        if len(entries) < chunk_size:
            return

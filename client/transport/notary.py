"""A notary's key query (§11.4) over the client's transport: ``POST
/_matrix/key/v2/query`` with ``minimum_valid_until_ts``, the answer opened with the
notary's key (``protocol.keyquery``)."""

from __future__ import annotations

import json
from typing import Iterable

from . import fetcher as fetching
from .api import KEY_DOCUMENT_BYTES
from .fetcher import Fetcher, Request
from ..protocol.errors import TransportError
from ..protocol.keyquery import MAX_ANSWER_DOCUMENTS, Notary, format_key_query, parse_notary_answer
from ..protocol.serverkeys import KeyDocument


class NotaryAPI:
    """One notary, reached through ``fetcher`` (by default ``default_fetcher()``)."""

    def __init__(self, notary: Notary, fetcher: Fetcher | None = None):
        self.notary = notary
        self.base_url = notary.url.rstrip("/")
        self.fetcher = fetcher or fetching.default_fetcher()

    def query(self, server_name: str, key_ids: Iterable[str],
              minimum_valid_until_ts: int) -> list[KeyDocument]:
        """The notary's documents of ``server_name`` (signed by the notary and by
        their own keys), asked for ``key_ids`` (all when empty) valid at least until
        ``minimum_valid_until_ts``."""
        body = json.dumps(format_key_query(server_name, key_ids, minimum_valid_until_ts))
        url = f"{self.base_url}/_matrix/key/v2/query"
        response = self.fetcher.fetch(
            Request("POST", url, {"Content-Type": "application/json"}, body.encode()),
            MAX_ANSWER_DOCUMENTS * KEY_DOCUMENT_BYTES)
        try:
            answer = json.loads(response.body)
        except (ValueError, RecursionError) as exc:
            raise TransportError(f"{url}: answer is not JSON") from exc
        return parse_notary_answer(answer, server_name, self.notary)

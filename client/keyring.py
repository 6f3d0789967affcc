"""The client's keyring (§11.3): whether a server key was valid when an object was
signed, from the server's key documents, in the manner of Synapse's ``Keyring``.

Key documents come from sources tried in order, each a ``KeyFetcher`` strategy:
the home's cache (``CacheKeyFetcher``), the origin's ``GET /_matrix/key/v2/server``
(``OriginKeyFetcher``), then each trusted notary's ``POST /_matrix/key/v2/query``
with ``minimum_valid_until_ts`` = the object's ``ts`` (``NotaryKeyFetcher``). A
source is asked only when what the keyring holds cannot tell (``trust.keydocs``:
UNKNOWN), and at most once per session: a lookup checks about 1,300 reply
signatures, and one document covers every ``ts`` up to its ``valid_until_ts``.
A failing source is noted and the next one asked; only when none can tell is the
signature refused, with each source's failure. Every document must name only keys
that the chain gave the server (``check_document_keys``), else it is refused; the
newest one that passes is kept in the home for the next session.

The decisions are ``trust.keydocs``'s; this module only fetches and remembers.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, Sequence

from .clock import now_ms
from .protocol.encoding import format_ms
from .protocol.errors import ClientError, ProtocolError
from .protocol.keyquery import Notary
from .protocol.serverkeys import KeyDocument
from .store.home import Home
from .transport.api import KeyserverAPI
from .transport.fetcher import Fetcher
from .transport.notary import NotaryAPI
from .trust.keydocs import (KeyDocumentRefused, KeyNotValid, Verdict, check_document_keys,
                            key_verdict)
from .trust.keyring import ServerKey


@dataclass(frozen=True)
class FetchKeyResult:
    """A verified key document (origin-signed; notary-signed when from a notary), when
    this client fetched it, and from where."""

    document: KeyDocument
    fetched_ts: int
    source: str


class KeyFetcher(abc.ABC):
    """One source of key documents."""

    #: How the user is told of this source.
    source: str

    @abc.abstractmethod
    def get_keys(self, server_name: str, key_ids: Sequence[str],
                 minimum_valid_until_ts: int) -> FetchKeyResult | None:
        """A document of ``server_name`` naming ``key_ids`` (all when empty), valid
        until at least ``minimum_valid_until_ts`` if the source can; None when it has
        none; raise when it fails."""


class CacheKeyFetcher(KeyFetcher):
    """The newest document the home kept (verified when it was fetched)."""

    source = "the home's cache"

    def __init__(self, home: Home):
        self.home = home

    def get_keys(self, server_name, key_ids, minimum_valid_until_ts):
        kept = self.home.key_document(server_name)
        return FetchKeyResult(kept[0], kept[1], self.source) if kept else None


class OriginKeyFetcher(KeyFetcher):
    """The server's own ``GET /_matrix/key/v2/server``, through the session's transport."""

    def __init__(self, api: KeyserverAPI, clock: Callable[[], int] = now_ms):
        self.api, self.clock = api, clock
        self.source = f"{api.base_url}/_matrix/key/v2/server"

    def get_keys(self, server_name, key_ids, minimum_valid_until_ts):
        fetched_ts = self.clock()
        return FetchKeyResult(self.api.key_document(server_name), fetched_ts, self.source)


class NotaryKeyFetcher(KeyFetcher):
    """A trusted notary (§11.4), its answer signed by its configured key."""

    def __init__(self, notary: Notary, fetcher: Fetcher | None = None,
                 clock: Callable[[], int] = now_ms):
        self.api, self.clock = NotaryAPI(notary, fetcher), clock
        self.source = f"notary {notary.server_name}"

    def get_keys(self, server_name, key_ids, minimum_valid_until_ts):
        fetched_ts = self.clock()
        documents = self.api.query(server_name, key_ids, minimum_valid_until_ts)
        if not documents:
            return None
        newest = max(documents, key=lambda document: document.valid_until_ts)
        return FetchKeyResult(newest, fetched_ts, self.source)


class Keyring:
    """``KeyValidity`` for one server in one session: its key documents asked in
    order from ``fetchers`` (cache, origin, notaries), each at most once."""

    def __init__(self, home: Home, server_name: str, fetchers: Sequence[KeyFetcher]):
        self.home, self.server_name = home, server_name
        self.fetchers = list(fetchers)
        self._asked = 0                  # the fetchers asked so far, in order
        self._known: FetchKeyResult | None = None
        self._checked_against: frozenset[bytes] | None = None
        #: Why sources could not tell, for the user.
        self.failures: list[str] = []
        self._refusal: KeyDocumentRefused | None = None
        #: The origin's document as fetched in this session, once checked.
        self._fresh: FetchKeyResult | None = None

    @property
    def document(self) -> KeyDocument | None:
        """The newest document the keyring holds (checked against the chain)."""
        return self._known.document if self._known else None

    def check_valid(self, pubkey: bytes, ts: int, keys: Sequence[ServerKey], previous: bool,
                    what: str) -> None:
        chain = frozenset(key.pubkey for key in keys)
        if self._known is not None and self._checked_against != chain:
            self._known = self._accepted(self._known, chain)
            self._checked_against = chain
        verdict = self._verdict(self._known, pubkey, ts, previous)
        while verdict is Verdict.UNKNOWN and self._asked < len(self.fetchers):
            result = self._ask(self.fetchers[self._asked], ts, chain)
            self._asked += 1
            if result is None:
                continue
            if isinstance(self.fetchers[self._asked - 1], OriginKeyFetcher):
                self._fresh = result
            if self._known is None or \
                    result.document.valid_until_ts >= self._known.document.valid_until_ts:
                self._known, self._checked_against = result, chain
                if result.source != CacheKeyFetcher.source:
                    self.home.record_key_document(self.server_name, result.document,
                                                  result.fetched_ts)
            verdict = self._verdict(result, pubkey, ts, previous)
        if verdict is Verdict.VALID:
            return
        if verdict is Verdict.EXPIRED:
            raise KeyNotValid(f"{what} is signed by a key of {self.server_name} that had "
                              f"expired before the time it bears ({format_ms(ts)})")
        if self._refusal is not None:
            raise self._refusal
        raise KeyNotValid(f"{what}: no key document of {self.server_name} says its signing "
                          f"key was valid at {format_ms(ts)}" +
                          "".join(f"; {failure}" for failure in self.failures))

    def fresh_document(self, keys: Sequence[ServerKey]) -> KeyDocument:
        """The origin's document fetched now and checked against the chain's ``keys``
        (kept as the newest): what the server shows this client today."""
        if self._fresh is not None:
            return self._fresh.document
        origin = next(fetcher for fetcher in self.fetchers if isinstance(fetcher, OriginKeyFetcher))
        result = origin.get_keys(self.server_name, (), 0)
        assert result is not None
        check_document_keys(result.document, [key.pubkey for key in keys])
        self.home.record_key_document(self.server_name, result.document, result.fetched_ts)
        if self._known is None or \
                result.document.valid_until_ts >= self._known.document.valid_until_ts:
            self._known = result
            self._checked_against = frozenset(key.pubkey for key in keys)
        self._fresh = result
        return result.document

    def _verdict(self, result: FetchKeyResult | None, pubkey: bytes, ts: int,
                 previous: bool) -> Verdict:
        if result is None:
            return Verdict.UNKNOWN
        return key_verdict(result.document, result.fetched_ts, pubkey, ts, previous)

    def _accepted(self, result: FetchKeyResult, chain: frozenset[bytes]) -> FetchKeyResult | None:
        """``result`` if its document names only the chain's keys; else None, noted."""
        try:
            check_document_keys(result.document, chain)
        except KeyDocumentRefused as exc:
            self.failures.append(f"{result.source}: {exc}")
            self._refusal = self._refusal or exc
            return None
        return result

    def _ask(self, fetcher: KeyFetcher, ts: int, chain: frozenset[bytes]) -> FetchKeyResult | None:
        """What ``fetcher`` has (checked against the chain), or None, its failure noted."""
        try:
            result = fetcher.get_keys(self.server_name, (), ts)
        except (ProtocolError, ClientError) as exc:
            self.failures.append(f"{fetcher.source}: {exc}")
            return None
        if result is None:
            self.failures.append(f"{fetcher.source}: no document")
            return None
        return self._accepted(result, chain)


def server_keyring(home: Home, server_name: str, api: KeyserverAPI,
                   notaries: Sequence[Notary] = ()) -> Keyring:
    """The keyring of a session with ``server_name``: the home's cache, the origin,
    then ``notaries``, all through ``api``'s transport."""
    return Keyring(home, server_name, [
        CacheKeyFetcher(home), OriginKeyFetcher(api),
        *(NotaryKeyFetcher(notary, api.fetcher) for notary in notaries)])

"""Looking up an identity on a verified local chain (§7.3, §11.3): search the
chain for its entries, take the server's reply for each (fetched in bundles by
the session, §5.1, so the server never learns whose replies they are), and let
``trust.history`` verify them. The server's own keys are found the same way, on
``keyserver@<server_name>``'s entries.
"""

from __future__ import annotations

import threading
from typing import Callable, Collection, Mapping, Sequence

from .protocol.hashchain import ENTRY_SIZE
from .protocol.identity import server_identity
from .protocol.wire import BUNDLE_SIZE, UIDMessageReply
from .store.localchain import LocalChain
from .store.search import ChainSearch
from .transport.api import KeyserverAPI
from .trust.bundles import check_bundle
from .trust.history import LookupResult, Match, ServerRecord, verify_history, verify_server_keys
from .trust.keyring import KeyValidity

#: The server's replies for chain positions, each checked against the chain's entry.
Replies = Callable[[Collection[int]], Mapping[int, UIDMessageReply]]


#: How many bundles of a batch are fetched at once, each over a connection of its own.
FETCH_THREADS = 5


def fetch_bundles(api: KeyserverAPI, chain: LocalChain,
                  bundles: Sequence[int]) -> list[UIDMessageReply]:
    """The replies of ``bundles`` in the order given (the caller shuffles), each
    naming the verified chain's entry at its position; any bundle that fails fails
    them all, so nothing of a lying server is kept. (Their signatures are for the
    caller to check: that may need the keyring, which keeps documents in the home.)

    The batch is fetched at once, by this thread and up to ``FETCH_THREADS - 1``
    more over connections of their own, so the waits for the server overlap."""
    def fetch(part: Sequence[int]) -> list[list[UIDMessageReply]]:
        return [_checked(api, chain, bundle) for bundle in part]

    def work(index: int) -> None:
        try:
            results[index] = fetch(parts[index])
        except BaseException as exc:   # raised in the caller's thread below
            results[index] = exc
        finally:
            api.fetcher.close()   # this thread's connection

    count = max(1, min(len(bundles), FETCH_THREADS))
    parts = [bundles[i::count] for i in range(count)]
    results: list[list[list[UIDMessageReply]] | BaseException | None] = [None] * count
    workers = [threading.Thread(target=work, args=(index,), daemon=True)
               for index in range(1, count)]
    for worker in workers:
        worker.start()
    try:
        results[0] = fetch(parts[0])
    finally:
        for worker in workers:
            worker.join()
    by_bundle: dict[int, list[UIDMessageReply]] = {}
    for part, result in zip(parts, results):
        if isinstance(result, BaseException):
            raise result
        by_bundle.update(zip(part, result))
    return [reply for bundle in bundles for reply in by_bundle[bundle]]


def _checked(api: KeyserverAPI, chain: LocalChain, bundle: int) -> list[UIDMessageReply]:
    return check_bundle(api.fetch_bundle(bundle), chain.length, _entries_of(chain, bundle))


def _entries_of(chain: LocalChain, bundle: int) -> Callable[[int], bytes]:
    """The verified entry at each position of ``bundle``, read from disk at once."""
    first = bundle * BUNDLE_SIZE
    block = chain.read(first, first + BUNDLE_SIZE)
    return lambda pos: block[(pos - first) * ENTRY_SIZE:(pos - first + 1) * ENTRY_SIZE]


def _matches(replies: Replies, search: ChainSearch, identity: str,
             upto: int | None = None) -> list[Match]:
    """Each of ``identity``'s entries (before position ``upto``, if given) with the
    reply the server serves for it."""
    found = [(pos, uid_hash) for pos, uid_hash in search.search(identity)
             if upto is None or pos < upto]
    served = replies([pos for pos, _ in found])
    return [Match(pos, search.chain.entry(pos), uid_hash, served[pos],
                  search.chain.first_seen(pos))
            for pos, uid_hash in found]


def server_record(replies: Replies, search: ChainSearch, server_name: str,
                  validity: KeyValidity) -> ServerRecord:
    """The server's signing keys and policy as its own entries on the chain record
    them (§4, §7.2)."""
    return verify_server_keys(server_name,
                              _matches(replies, search, server_identity(server_name)),
                              validity)


def lookup(replies: Replies, search: ChainSearch, server_name: str, identity: str,
           validity: KeyValidity, server: ServerRecord | None = None,
           upto: int | None = None) -> LookupResult | None:
    """The identity's verified history and current keys, or None if not on the chain
    (on its first ``upto`` entries, if given: the log as far as witnesses cosigned it).

    ``server`` is what the chain says of the server, if the caller has it from
    ``server_record`` already."""
    if server is None:
        # One pass over the chain finds both (the server's own entries give its keys).
        search.search_many([server_identity(server_name), identity])
        server = server_record(replies, search, server_name, validity)
    return verify_history(identity, server_name, _matches(replies, search, identity, upto),
                          server, validity)

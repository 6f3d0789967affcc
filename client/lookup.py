"""Looking up an identity on a verified local chain (§7.3, §11.3): search the
chain for its entries, take the server's reply for each (fetched in bundles by
the session, §5.1, so the server never learns whose replies they are), and let
``trust.history`` verify them. The server's own keys are found the same way, on
``keyserver@<server_name>``'s entries.
"""

from __future__ import annotations

from typing import Callable, Collection, Mapping

from .protocol.identity import server_identity
from .protocol.wire import UIDMessageReply
from .store.localchain import LocalChain
from .store.search import ChainSearch
from .transport.api import KeyserverAPI
from .trust.bundles import check_bundle
from .trust.history import LookupResult, Match, ServerRecord, verify_history, verify_server_keys
from .trust.keyring import KeyValidity

#: The server's replies for chain positions, each checked against the chain's entry.
Replies = Callable[[Collection[int]], Mapping[int, UIDMessageReply]]


def fetch_bundles(api: KeyserverAPI, chain: LocalChain,
                  bundles: Collection[int]) -> list[UIDMessageReply]:
    """The replies of ``bundles``, fetched in the order given (the caller shuffles),
    each naming the verified chain's entry at its position; any bundle that fails
    fails them all, so nothing of a lying server is kept."""
    replies: list[UIDMessageReply] = []
    for bundle in bundles:
        replies += check_bundle(api.fetch_bundle(bundle), chain.length, chain.entry)
    return replies


def _matches(replies: Replies, search: ChainSearch, identity: str) -> list[Match]:
    """Each of ``identity``'s entries with the reply the server serves for it."""
    found = search.search(identity)
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
           validity: KeyValidity, server: ServerRecord | None = None) -> LookupResult | None:
    """The identity's verified history and current keys, or None if not on the chain.

    ``server`` is what the chain says of the server, if the caller has it from
    ``server_record`` already."""
    if server is None:
        # One pass over the chain finds both (the server's own entries give its keys).
        search.search_many([server_identity(server_name), identity])
        server = server_record(replies, search, server_name, validity)
    return verify_history(identity, server_name, _matches(replies, search, identity), server,
                          validity)

"""Looking up an identity on a verified local chain (§7.3, §11.3): search the
chain for its entries, fetch the server's reply for each, and let
``trust.history`` verify them. The server's own keys are found the same way, on
``keyserver@<server_name>``'s entries.
"""

from __future__ import annotations

from .protocol.encoding import b64url_encode, sha256
from .protocol.identity import server_identity
from .protocol.uidrules import Limits
from .protocol.wire import UIDMessageReply
from .store.search import ChainSearch
from .transport.api import KeyserverAPI
from .trust.history import LookupResult, Match, verify_history, verify_server_keys
from .trust.keyring import ServerKey


def _matches(api: KeyserverAPI, search: ChainSearch, identity: str) -> list[Match]:
    """Each of ``identity``'s entries with the reply the server serves for it."""
    return [Match(pos, search.chain.entry(pos), uid_hash,
                  api.fetch_uid(b64url_encode(sha256(uid_hash)),
                                what=f"the reply for position {pos} is malformed"),
                  search.chain.first_seen(pos))
            for pos, uid_hash in search.search(identity)]


def server_keys(api: KeyserverAPI, search: ChainSearch, server_name: str,
                limits: Limits) -> tuple[list[ServerKey], list[UIDMessageReply]]:
    """The server's signing keys as its own entries on the chain record them (§7.2),
    and the verified replies that record them."""
    matches = _matches(api, search, server_identity(server_name))
    return verify_server_keys(server_name, matches, limits), [match.reply for match in matches]


def lookup(api: KeyserverAPI, search: ChainSearch, server_name: str, identity: str,
           limits: Limits, keys: list[ServerKey] | None = None) -> LookupResult | None:
    """The identity's verified history and current keys, or None if not on the chain.

    ``keys`` are the server's keys for the whole chain, if the caller has them
    from ``server_keys`` already."""
    if keys is None:
        # One pass over the chain finds both (the server's own entries give its keys).
        search.search_many([server_identity(server_name), identity])
        keys, _ = server_keys(api, search, server_name, limits)
    return verify_history(identity, server_name, _matches(api, search, identity), keys, limits)

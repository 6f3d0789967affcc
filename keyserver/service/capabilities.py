"""The capabilities object (§12): what this server is, offers and limits, signed."""

from __future__ import annotations

from client.protocol.note import VerifierKey
from client.protocol.wire import Capabilities, Head, TokenKeyInfo, format_capabilities

from ..storage import chain, checkpoints
from ..storage.db import Database
from .policy import Policy
from . import own
from .signing import ServerKey, Sign
from .tokenkeys import usable_keys

METHODS = (
    "KeyRepository.Capabilities",
    "KeyHashchain.FetchHashChain",
    "KeyHashchain.FetchLastHashChain",
    "KeyHashchain.LookupUID",
    "KeyRepository.CreateUID",
    "KeyRepository.UpdateUID",
    "KeyRepository.FetchUID",
    "KeyInitRepository.AddKeyInit",
    "KeyInitRepository.FetchKeyInit",
    "KeyInitRepository.FlushKeyInit",
)


def capabilities(db: Database, policy: Policy, server_keys: list[ServerKey], sign: Sign,
                 now: int, witness: VerifierKey) -> dict:
    """The signed capabilities at ``now``: the chain's head, the token keys valid now,
    the newest checkpoint and, when the server witnesses logs (``WITNESS_LOGS``), the
    ``witness`` key that cosigns them (§8.1)."""
    head = chain.head(db)
    newest = checkpoints.newest(db)
    base = policy.base_url
    return sign(format_capabilities(Capabilities(
        server_name=policy.server_name, version="1", methods=METHODS,
        domains=policy.domains, keyrepository_uris=(base,),
        keyinitrepository_uris=policy.keyinitrepository_uris, hashchain_uris=(base,),
        hashchain_head=Head(head.pos, head.entry),
        sigpubkeys={key.key_id: key.pubkey for key in server_keys},
        token_keys=tuple(TokenKeyInfo(key.key_id, key.spki, key.not_after_ts)
                         for key in usable_keys(db, now)),
        token_prices=policy.token_prices, limits=policy.limits,
        log_vkey=own.current(db).log_vkey, ts=now,
        checkpoint=None if newest is None else newest.note, tiles_url=policy.tiles_url,
        witness=witness if policy.witness_logs else None)))

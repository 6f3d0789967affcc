"""The capabilities object (§12): what this server is, offers and limits, signed."""

from __future__ import annotations

from client.protocol.encoding import b64encode

from ..storage import chain, tokens
from ..storage.db import Database
from ..storage.tokens import TokenKey
from .policy import Policy
from .signing import ServerKey, Sign

METHODS = [
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
]


def format_limits(policy: Policy) -> dict:
    """§12 ``limits``: the bounds a client must keep to."""
    return {
        "max_chunk": policy.max_chunk,
        "max_uid_lifetime_ms": policy.limits.max_uid_lifetime_ms,
        "reclaim_grace_ms": policy.limits.reclaim_grace_ms,
        "lastentry_max_age_ms": policy.limits.lastentry_max_age_ms,
        "max_keyinit_lifetime_ms": policy.keyinits.max_lifetime_ms,
        "max_keyinits_per_identity": policy.keyinits.max_stored,
        "max_keyinits_per_request": policy.keyinits.max_per_request,
        "max_request_bytes": policy.max_request_bytes,
    }


def format_token_key(key: TokenKey) -> dict:
    """§12 ``token_keys``: one entry."""
    return {"key_id": b64encode(key.key_id), "spki": b64encode(key.spki),
            "not_after_ts": key.not_after_ts}


def capabilities(db: Database, policy: Policy, server_keys: list[ServerKey], sign: Sign,
                 now: int) -> dict:
    """The signed capabilities at ``now``: the chain's head and the token keys valid now."""
    head = chain.head(db)
    base = policy.base_url
    body = {
        "server_name": policy.server_name,
        "version": "1",
        "methods": METHODS,
        "domains": list(policy.domains),
        "keyrepository_uris": [base],
        "keyinitrepository_uris": list(policy.keyinits.repouris),
        "hashchain_uris": [base],
        "hashchain_head": {"pos": head.pos, "entry": b64encode(head.entry)},
        "sigpubkeys": {key.key_id: key.pubkey_b64 for key in server_keys},
        "token_keys": [format_token_key(key) for key in tokens.valid_keys(db, now)],
        "token_prices": dict(policy.token_prices),
        "limits": format_limits(policy),
        "ts": now,
    }
    return sign(body)

"""The server's own identity, ``keyserver@<server_name>`` (§4, §7.2): entry 0 of
the chain, and an update of it whenever ``preferences.server`` changes (a token key
listed or retired, a time limit changed), appended in the same transaction as the
change itself, so that the chain states the policy the server applies from the
position on. Each update is signed by the current signing key and authorized by
the previous message's sigkey (§4.2), like any identity's.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Sequence

import nacl.signing

from client.protocol.hashchain import ZERO_HASH
from client.protocol.identity import server_identity
from client.protocol.keys import ed25519_entry
from client.protocol.note import VerifierKey
from client.protocol.uidmessage import (ServerPreferences, UIDMessage, build_uid_content,
                                        parse_uid_message, sign_uid_content,
                                        update_uid_content)
from client.protocol.uidrules import Latest

from ..storage import chain
from ..storage import own as own_storage
from ..storage.db import Database, transaction
from .policy import Policy
from .signing import ServerKey, signer
from . import uids


def log_verifier_key(server_name: str, log_key: nacl.signing.SigningKey) -> VerifierKey:
    """The log key as checkpoints name it (§8): the key name is the log's origin."""
    return VerifierKey(f"{server_name}/keyserver", bytes(log_key.verify_key))


def preferences(policy: Policy, log_key: VerifierKey,
                token_keys: Sequence[bytes]) -> ServerPreferences:
    """``preferences.server`` stating ``policy``'s time limits."""
    return ServerPreferences(log_key, tuple(token_keys), policy.limits.reclaim_grace_ms,
                             policy.limits.max_uid_lifetime_ms)


@functools.lru_cache(maxsize=4)
def _parse(text: str) -> UIDMessage:
    return parse_uid_message(json.loads(text))


def latest(db: Database) -> UIDMessage | None:
    """The server's latest own message (parsed once per process for each)."""
    text = own_storage.latest(db)
    return None if text is None else _parse(text)


def current(db: Database) -> ServerPreferences:
    """The policy the chain states now: the latest own message's ``preferences.server``."""
    message = latest(db)
    if message is None or message.server is None:
        raise RuntimeError("the chain has no keyserver@ message with preferences.server: "
                           "this instance predates revision 2 of the protocol")
    return message.server


def _append(db: Database, policy: Policy, message: dict, key: ServerKey, ts: int,
            head: chain.Head | None, previous: UIDMessage | None) -> dict:
    """Store the signed ``message`` after ``head`` at ``ts``; return its reply."""
    reply = uids.store_uid_message(db, parse_uid_message(message), ts,
                              signer(policy.server_name, key),
                              Latest.of(previous) if previous else None, last=head)
    own_storage.insert(db, reply["entry"]["hashchain_pos"], message)
    return reply


def create(db: Database, policy: Policy, key: ServerKey, server: ServerPreferences,
           now: int) -> dict:
    """Entry 0 (§7.2): msgcount 0, ``lastentry`` zero, self-signed; in ``transaction``."""
    content = build_uid_content(
        server_identity(policy.server_name), ed25519_entry(key.signing_key), msgcount=0,
        not_before_ts=now, not_after_ts=now + policy.limits.max_uid_lifetime_ms,
        lastentry=ZERO_HASH, repouris=[policy.base_url], server=server)
    return _append(db, policy, sign_uid_content(content, key.signing_key), key, now, None, None)


def update(db: Database, policy: Policy, keys: Sequence[ServerKey], server: ServerPreferences,
           now: int) -> dict:
    """Append the next message of ``keyserver@`` carrying ``server``, signed by the
    current key (the last of ``keys``) and authorized by the previous sigkey; runs
    in the caller's ``transaction``."""
    previous = latest(db)
    if previous is None:
        raise RuntimeError("the chain holds no keyserver@ message to update")
    by_pubkey = {key.pubkey: key for key in keys}
    if previous.sigkey.pubkey not in by_pubkey:
        raise RuntimeError("the signing key of keyserver@'s latest message is not in the "
                           "key file: an update cannot be authorized")
    key = keys[-1]
    head = chain.head(db)
    ts = chain.next_ts(head, now)
    content = update_uid_content(
        previous, ed25519_entry(key.signing_key), not_before_ts=ts,
        not_after_ts=ts + policy.limits.max_uid_lifetime_ms, lastentry=head.hash,
        server=server)
    message = sign_uid_content(content, key.signing_key,
                               previous_sigkey=by_pubkey[previous.sigkey.pubkey].signing_key)
    return _append(db, policy, message, key, ts, head, previous)


def apply_limits(db: Database, policy: Policy, keys: Sequence[ServerKey], now: int) -> bool:
    """If the configured time limits differ from those the chain states, append the
    update that states them (in one transaction, under the write lock); return
    whether it did. Safe to run in every process at once: each re-reads inside."""
    wanted = policy.limits.reclaim_grace_ms, policy.limits.max_uid_lifetime_ms
    server = current(db)
    if (server.reclaim_grace_ms, server.max_uid_lifetime_ms) == wanted:
        return False
    with transaction(db):
        server = current(db)
        if (server.reclaim_grace_ms, server.max_uid_lifetime_ms) == wanted:
            return False
        update(db, policy, keys, dataclasses.replace(
            server, reclaim_grace_ms=wanted[0], max_uid_lifetime_ms=wanted[1]), now)
    return True

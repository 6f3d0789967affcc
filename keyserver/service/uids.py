"""The key repository's decisions (§4, §5, §6): accepting UIDMessages and the signed
UIDMessageReplies they get.

``put_uid_message`` runs the checks in the order of §4.2.1 and does every write
(token spend, chain entry, repository, indexes) in one transaction, so a
failed request changes nothing and a successful one is whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlite_utils

from client.protocol.encoding import require_fields
from client.protocol.errors import KeyInUse, ProtocolError
from client.protocol.identity import server_identity
from client.protocol.keyinit import sigkeyhash
from client.protocol.uidmessage import UIDMessage, encrypt_uid_message, parse_uid_message
from client.protocol.uidrules import (Latest, check_identity, check_lastentry,
                                      check_preferences, check_repouris, check_server_member,
                                      check_state,
                                      check_validity, signature_error)
from client.protocol.wire import (BUNDLE_SIZE, ReplyBundle, ReplyEntry, UIDMessageReply,
                                  format_reply_bundle, format_uid_message_reply)

from ..storage import chain, keyinits, uids
from ..storage.uids import StoredReply
from .policy import Policy
from .signing import Sign
from .twophase import Verified, Write, verify_then_decide

if TYPE_CHECKING:
    from .payment import Charge   # payment -> tokenkeys -> own -> uids: for the type only


def format_stored_reply(stored: StoredReply) -> dict:
    """A stored UIDMessageReply as served (§5), with the signatures it was given."""
    return format_uid_message_reply(
        ReplyEntry(stored.encrypted, stored.entry, stored.pos, stored.ts), stored.signatures)


def check_keys_free(db: sqlite_utils.Database, message: UIDMessage) -> None:
    """A sigkey or sigescrow belongs to one identity forever (§4: ``KEY_IN_USE``)."""
    if uids.keys_owned_by_other(db, message):
        raise KeyInUse("this key is already used by another identity: generate a new one")


def check_lastentry_fresh(db: sqlite_utils.Database, lastentry: bytes, head: chain.Head,
                          ts: int, max_age_ms: int) -> None:
    """§7.4 at the entry's time ``ts``, against the ``head`` it will follow."""
    position = chain.position_of(db, lastentry)
    successor = chain.entry_at(db, position + 1) if position is not None else None
    check_lastentry(position, head.pos, successor.ts if successor else None, ts, max_age_ms)


def put_uid_message(db: sqlite_utils.Database, write: Write, path_identity: str, body: dict,
                    now: int, policy: Policy, charge: Charge,
                    sign: Sign) -> tuple[dict, bool]:
    """CreateUID/UpdateUID: return the signed reply and whether it created the identity.

    The checks that need no state run first, then an absent or invalid token is
    refused, before anything costly. The signatures (the costly part) are
    verified before the write lock against the latest message as read now, and
    only verified again inside if a racing write changed it; their verdict is
    still given at its place in the order of checks."""
    require_fields(body, {"uid_message"}, "request body")
    message = parse_uid_message(body["uid_message"])
    own = server_identity(policy.server_name)
    if message.identity != own:   # the server's own is a reserved name to requests
        check_server_member(message, own)
    check_preferences(message, policy.allowed_mixaddresses)
    check_repouris(message, policy.keyinitrepository_uris)
    check_identity(message, path_identity, policy.domains, policy.reserved)
    operation = "create_uid" if message.msgcount == 0 else "update_uid"
    charge.check(operation)
    sealed = encrypt_uid_message(message.raw)

    def accept(db: sqlite_utils.Database,
               verified: Verified[Latest | None, ProtocolError | None]) -> tuple[dict, bool]:
        previous, error = verified.recheck(db)
        charge(db, operation)
        # §5: the entry's time, under the write lock; every time rule is judged at it.
        head = chain.head(db)
        ts = chain.next_ts(head, now)
        create = check_state(message, previous, ts, policy.limits.reclaim_grace_ms)
        check_keys_free(db, message)
        check_validity(message, ts, policy.limits.max_uid_lifetime_ms)
        if error is not None:
            raise error
        check_lastentry_fresh(db, message.lastentry, head, ts,
                              policy.limits.lastentry_max_age_ms)
        return store_uid_message(db, message, ts, sign, previous, sealed, head), create

    return verify_then_decide(db, write, lambda db: uids.latest(db, message.identity),
                              lambda latest: signature_error(message, latest), accept)


def store_uid_message(db: sqlite_utils.Database, message: UIDMessage, now: int, sign: Sign,
                      previous: Latest | None = None,
                      sealed: tuple[bytes, bytes] | None = None,
                      last: chain.Head | None = None) -> dict:
    """Encrypt and store an accepted UIDMessage, append its chain entry, update the
    indexes, and return the signed UIDMessageReply. Runs in ``transaction``.

    ``previous`` is the identity's latest message the checks saw (the index update
    is conditional on it). When the message replaces ``previous``'s sigkey, or
    reclaims the identity, the KeyInits stored under ``previous``'s sigkey are
    deleted with it (§9). ``sealed`` is ``encrypt_uid_message(message.raw)`` if
    already computed, ``last`` the chain's head if already read in this transaction.
    """
    uid_hash, encrypted = sealed or encrypt_uid_message(message.raw)
    head = chain.append(db, message.identity, uid_hash, now, last)
    reply = sign(format_uid_message_reply(ReplyEntry(encrypted, head.entry, head.pos, head.ts)))
    uids.insert(db, message, head.pos, encrypted, head.ts, reply["signatures"], previous)
    if previous is not None and (message.msgcount == 0 or message.sigkey != previous.sigkey):
        # §9: KeyInits die with the sigkey that signed them, and with the owner on
        # a reclaim; senders must not get key material the identity no longer vouches for.
        keyinits.delete_all(db, sigkeyhash(previous.sigkey.pubkey))
    return reply


def fetch_reply(db: sqlite_utils.Database, uid_index: bytes) -> dict | None:
    """FetchUID: the stored UIDMessageReply under its UIDIndex."""
    stored = uids.fetch_reply(db, uid_index)
    return format_stored_reply(stored) if stored else None


def reply_bundle(db: sqlite_utils.Database, bundle: int) -> dict:
    """§5.1: the served map of bundle ``bundle``'s replies (the caller checks that the
    bundle exists). ``raw`` is what a parser keeps of a received reply: a served one
    has none."""
    first = bundle * BUNDLE_SIZE
    replies = tuple(UIDMessageReply(ReplyEntry(s.encrypted, s.entry, s.pos, s.ts),
                                    s.signatures, {})
                    for s in uids.replies_between(db, first, first + BUNDLE_SIZE))
    return format_reply_bundle(ReplyBundle(bundle, replies))


def latest_reply(db: sqlite_utils.Database, identity: str) -> dict | None:
    stored = uids.latest_reply(db, identity)
    return format_stored_reply(stored) if stored else None


def history(db: sqlite_utils.Database, identity: str, start: int,
            page_size: int) -> tuple[list[dict], int | None] | None:
    """A page of the identity's replies, oldest first, and the next start (or None)."""
    page = uids.history(db, identity, start, page_size)
    if page is None:
        return None
    stored, next_start = page
    return [format_stored_reply(s) for s in stored], next_start

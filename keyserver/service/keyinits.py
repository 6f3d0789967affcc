"""The KeyInit repository's decisions (§9, §12): AddKeyInit, FetchKeyInit (and its rate
limits), FlushKeyInit, and the owner's status request (our extension).

The rules are ``client.protocol.keyinit``'s; here they meet the storage. Every request
that changes state is one job of the ``write`` runner: the add's token spend, purge and
inserts, the fetch's rate count, choice and delete, the flush's replay mark and delete each
commit together or not at all, and the write lock serializes them, so two
fetchers can never be handed the same non-fallback KeyInit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from client.protocol.errors import (InvalidSignature, NoKeyinit, NotFound, ProtocolError,
                                    RateLimited)
from client.protocol.keyinit import (FLUSH, STATUS, KeyInit, check_keyinit_batch,
                                     check_keyinit_shape, check_owner_request, choose_keyinit,
                                     parse_add_request, sigkeyhash)
from client.protocol.keys import KeyEntry
from client.protocol.uidrules import is_current
from client.protocol.wire import KeyInitReceipt, KeyInitStatus, format_keyinit_receipt

from ..storage import keyinits as store
from ..storage.db import Database
from .payment import Charge
from .policy import KeyInitPolicy
from .signing import Sign
from .twophase import Verified, Write, verify_then_decide


@dataclass(frozen=True)
class AddState:
    """What the add rules need of the stored state for one sigkey."""

    identity_not_after_ts: int
    last_msgcount: int | None
    stored_count: int


def add_state(db: Database, sigkey: KeyEntry, now: int) -> AddState | None:
    """None unless ``sigkey`` is the current sigkey of a current identity (§9)."""
    owner = store.sigkey_owner(db, sigkey.pubkey)
    if owner is None or not is_current(owner, now):
        return None
    key_hash = sigkeyhash(sigkey.pubkey)
    return AddState(owner.not_after_ts, store.max_msgcount(db, key_hash),
                    store.count_unexpired(db, key_hash, now))


def batch_error(keyinits: tuple[KeyInit, ...], sigkey: KeyEntry, state: AddState, now: int,
                policy: KeyInitPolicy) -> ProtocolError | None:
    """``check_keyinit_batch``'s verdict against ``state``, as a value."""
    try:
        check_keyinit_batch(keyinits, sigkey=sigkey, repouris=policy.repouris,
                            last_msgcount=state.last_msgcount,
                            identity_not_after_ts=state.identity_not_after_ts, now_ms=now,
                            max_lifetime_ms=policy.max_lifetime_ms,
                            max_per_request=policy.max_per_request,
                            stored_count=state.stored_count, max_stored=policy.max_stored)
    except ProtocolError as exc:
        return exc
    return None


def add_keyinits(db: Database, write: Write, body: dict, now: int, policy: KeyInitPolicy,
                 charge: Charge, sign: Sign) -> dict:
    """AddKeyInit: store the batch all or nothing and return the signed receipt.

    Order of checks (as §4.2.1): shape (``INVALID_MESSAGE``, including the batch's
    size and order, sigkeyhash and repouri) → token → ``NOT_FOUND`` → state
    (``MSGCOUNT_MISMATCH``, ``KEYINIT_LIMIT``) → ``INVALID_VALIDITY`` →
    ``INVALID_SIGNATURE``. The shape is checked and an absent or invalid token
    refused before anything costly; the batch is then judged (signatures included,
    the costly part) before the write lock against the state as read now, and
    judged again inside only if a racing write changed that state.
    """
    sigkey, keyinits = parse_add_request(body, max_per_request=policy.max_per_request)
    check_keyinit_shape(keyinits, sigkey=sigkey, repouris=policy.repouris,
                        max_per_request=policy.max_per_request)
    charge.check("add_keyinit")
    key_hash = sigkeyhash(sigkey.pubkey)

    def judge(state: AddState | None) -> ProtocolError | None:
        # An unknown sigkey is NOT_FOUND at its place, whatever else the batch holds.
        return None if state is None else batch_error(keyinits, sigkey, state, now, policy)

    def accept(db: Database, verified: Verified[AddState | None, ProtocolError | None]) -> None:
        charge(db, "add_keyinit")
        store.purge_expired(db, now, key_hash)
        state, error = verified.recheck(db)
        if state is None:
            raise NotFound("this sigkey is not the current sigkey of a current identity: "
                           "register or update the identity first")
        if error is not None:
            raise error
        store.store(db, sigkey.pubkey, key_hash, keyinits)

    verify_then_decide(db, write, lambda db: add_state(db, sigkey, now), judge, accept)
    return sign(format_keyinit_receipt(
        KeyInitReceipt(key_hash, tuple(keyinit.hash for keyinit in keyinits), now)))


#: The fetch rate limits count the fetches of the last minute (§9).
FETCH_WINDOW_MS = 60_000


def limit_fetch(db: Database, address: str, key_hash: bytes, now: int,
                policy: KeyInitPolicy) -> None:
    """Count a fetch against the limits per client address and per sigkeyhash, or refuse
    it (``RATE_LIMITED``): fetching is free and consumes, so without them anyone could
    drain an identity's KeyInits in a second.

    Runs inside the fetch's write transaction: the counts live in the database, so
    every worker process of the instance shares them, and the write lock makes
    count-then-record exact. Only fetches let through are recorded (a refused client
    does not extend its own wait); fetches older than the window are forgotten here.
    """
    start = now - FETCH_WINDOW_MS
    store.purge_fetches(db, start)
    limits = (("address", address, policy.fetch_rate_per_address, "from your address"),
              ("sigkeyhash", key_hash, policy.fetch_rate_per_sigkeyhash, "for this sigkeyhash"))
    for scope, key, limit, whose in limits:
        if limit and store.count_fetches(db, scope, key, start, limit) >= limit:
            raise RateLimited(f"more than {limit} KeyInit fetches a minute {whose}: "
                              "retry in a minute")
    for scope, key, limit, _ in limits:
        if limit:
            store.record_fetch(db, scope, key, now)


def fetch_keyinit(write: Write, key_hash: bytes, address: str, now: int, rng: random.Random,
                  policy: KeyInitPolicy) -> str:
    """FetchKeyInit from ``address`` (the client's): within the rate limits, a current
    KeyInit of ``key_hash`` chosen by ``choose_keyinit``, deleted in the same transaction
    when the choice says so; ``NO_KEYINIT`` if there is none.

    Returns the KeyInit's canonical JSON text as stored."""

    def take(db: Database) -> str | None:
        limit_fetch(db, address, key_hash, now, policy)
        store.purge_expired(db, now, key_hash)
        stored = store.candidates(db, key_hash, now)
        index, delete = choose_keyinit(stored, now, rng)
        if index is None:
            return None
        chosen = stored[index].id
        text = store.keyinit_json(db, chosen)
        if delete and not store.consume(db, chosen):
            raise RuntimeError(f"KeyInit {chosen} vanished under the write lock")
        store.record_fetched(db)
        return text

    text = write(take)
    if text is None:
        raise NoKeyinit("no current KeyInit for this signing key: use the identity's static "
                        "keys if its preferences allow, or try again later")
    return text


def flush_keyinits(write: Write, key_hash: bytes, body: dict, now: int,
                   policy: KeyInitPolicy) -> int:
    """FlushKeyInit: delete every KeyInit of ``key_hash``; return how many unexpired ones
    went.

    Order of checks: ``NOT_FOUND`` (no KeyInit was ever stored for this sigkeyhash, or
    its sigkey is no longer its identity's current one) → ``check_owner_request``'s
    shape → time and replay → signature. The signed object names one repository URI;
    any of this server's is accepted, as they name the same repository.
    """

    def flush(db: Database) -> int:
        state = _owner_state(db, key_hash)
        ts = _check_owner_request(FLUSH, body, state, key_hash, now, policy.repouris,
                                  state.last_flush_ts)
        store.record_flush(db, key_hash, ts)
        store.purge_expired(db, now, key_hash)
        return store.delete_all(db, key_hash)

    return write(flush)


def keyinit_status(db: Database, key_hash: bytes, body: dict, now: int,
                   policy: KeyInitPolicy) -> KeyInitStatus:
    """The owner's view of its KeyInits here (our extension of §9, docs/decisions.md).

    Checked like a flush, signed with the action ``status``, but without a replay
    mark: it changes nothing, so it is a read, and a replay only repeats the answer
    to whoever could see it. Only the owner may ask, since the count moves with every
    fetch and would tell anyone when the identity is contacted."""
    state = _owner_state(db, key_hash)
    _check_owner_request(STATUS, body, state, key_hash, now, policy.repouris, None)
    return store.status(db, key_hash, now)


def _owner_state(db: Database, key_hash: bytes) -> store.FlushState:
    """The sigkey behind ``key_hash``, if it is still its identity's current one; the
    server learns it only from an add, so anything else is ``NOT_FOUND``."""
    state = store.flush_state(db, key_hash)
    if state is None or store.sigkey_owner(db, state.sigkey) is None:
        raise NotFound("no KeyInits of a current sigkey were ever stored under this "
                       "sigkeyhash")
    return state


def _check_owner_request(action: str, body: dict, state: store.FlushState, key_hash: bytes,
                         now: int, repouris: tuple[str, ...], last_ts: int | None) -> int:
    """``check_owner_request`` for the first of ``repouris`` the signature verifies with."""
    first: InvalidSignature | None = None
    for repouri in repouris:
        try:
            return check_owner_request(action, body, sigkey_pubkey=state.sigkey,
                                       repouri=repouri, sigkeyhash=key_hash, now_ms=now,
                                       last_ts=last_ts)
        except InvalidSignature as exc:
            first = first or exc
    assert first is not None, "a server has at least one KeyInit repository URI"
    raise first

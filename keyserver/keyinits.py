"""The KeyInit repository (§9, §12): AddKeyInit, FetchKeyInit and FlushKeyInit.

The rules are ``client.protocol.keyinit``'s; here they meet the database. Every request
that changes state is one job of ``db.write``: the add's token spend, purge and
inserts, the fetch's choice and delete, the flush's replay mark and delete each
commit together or not at all, and the write lock serializes them, so two
fetchers can never be handed the same non-fallback KeyInit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from client.protocol.encoding import b64encode, b64url_decode

from .clock import now_ms
from client.protocol.errors import (InvalidMessage, InvalidSignature, NoKeyinit, NotFound, ProtocolError,
                           RateLimited)
from client.protocol.keyinit import (KeyInit, check_flush, check_keyinit_batch, choose_keyinit,
                            parse_add_request, sigkeyhash)
from client.protocol.keys import KeyEntry
from client.protocol.uidrules import is_current

from . import keyinitstore, signing
from .capabilities import keyinit_repository_uris
from .db import Database, get_db, write
from .params import json_body
from .payment import charger
from .ratelimit import SlidingWindow
from .repository import Charge, Write

bp = Blueprint("keyinits", __name__, url_prefix="/v1/keyinits")

#: ``app.extensions`` key of the ``random.Random`` behind the fallback choice; tests
#: put a seeded one there. Production draws from the operating system.
RNG = "keyserver.keyinit_rng"
_SYSTEM_RANDOM = random.SystemRandom()


@dataclass(frozen=True)
class Policy:
    """The server configuration the add and flush rules consult."""

    repouris: tuple[str, ...]
    max_lifetime_ms: int
    max_per_request: int
    max_stored: int

    @classmethod
    def from_app(cls, app: Flask) -> Policy:
        config = app.config
        return cls(tuple(keyinit_repository_uris(app)), config["MAX_KEYINIT_LIFETIME"],
                   config["MAX_KEYINITS_PER_REQUEST"], config["MAX_KEYINITS_PER_IDENTITY"])


@dataclass(frozen=True)
class AddState:
    """What the add rules need of the stored state for one sigkey."""

    identity_not_after_ts: int
    last_msgcount: int | None
    stored_count: int


def add_state(db: Database, sigkey: KeyEntry, now: int) -> AddState | None:
    """None unless ``sigkey`` is the current sigkey of a current identity (§9)."""
    owner = keyinitstore.sigkey_owner(db, sigkey.pubkey)
    if owner is None or not is_current(owner, now):
        return None
    key_hash = sigkeyhash(sigkey.pubkey)
    return AddState(owner.not_after_ts, keyinitstore.max_msgcount(db, key_hash),
                    keyinitstore.count_unexpired(db, key_hash, now))


def batch_error(keyinits: tuple[KeyInit, ...], sigkey: KeyEntry, state: AddState, now: int,
                policy: Policy) -> ProtocolError | None:
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


def add_keyinits(db: Database, write: Write, body: dict, now: int, policy: Policy,
                 charge: Charge) -> dict:
    """AddKeyInit: store the batch all or nothing and return the signed receipt.

    Order of checks (as §4.2.1): shape (``INVALID_MESSAGE``, including the batch's
    size and order, sigkeyhash and repouri) → token → ``NOT_FOUND`` → state
    (``MSGCOUNT_MISMATCH``, ``KEYINIT_LIMIT``) → ``INVALID_VALIDITY`` →
    ``INVALID_SIGNATURE``. The batch is judged (signatures included, the costly
    part) before the write lock against the state as read now, and judged again
    inside only if a racing write changed that state.
    """
    sigkey, keyinits = parse_add_request(body)
    key_hash = sigkeyhash(sigkey.pubkey)
    seen = add_state(db, sigkey, now)
    # The shape stages do not depend on the state, so an unknown sigkey is judged
    # against an empty one to give them their place before the token.
    seen_error = batch_error(keyinits, sigkey,
                             seen or AddState(now + policy.max_lifetime_ms, None, 0), now, policy)
    if isinstance(seen_error, InvalidMessage):
        raise seen_error

    def accept(db: Database) -> None:
        charge(db, "add_keyinit")
        keyinitstore.purge_expired(db, now, key_hash)
        state = add_state(db, sigkey, now)
        if state is None:
            raise NotFound("this sigkey is not the current sigkey of a current identity: "
                           "register or update the identity first")
        error = seen_error if state == seen else batch_error(keyinits, sigkey, state, now,
                                                             policy)
        if error is not None:
            raise error
        keyinitstore.store(db, sigkey.pubkey, key_hash, keyinits)

    write(accept)
    return signing.sign({"sigkeyhash": b64encode(key_hash),
                         "keyinit_hashes": [b64encode(k.hash) for k in keyinits], "ts": now})


def fetch_keyinit(db: Database, write: Write, key_hash: bytes, now: int,
                  rng: random.Random) -> str:
    """FetchKeyInit: a current KeyInit of ``key_hash`` chosen by ``choose_keyinit``, deleted
    in the same transaction when the choice says so; ``NO_KEYINIT`` if there is none.

    Returns the KeyInit's canonical JSON text as stored."""

    def take(db: Database) -> str | None:
        keyinitstore.purge_expired(db, now, key_hash)
        stored = keyinitstore.candidates(db, key_hash, now)
        index, delete = choose_keyinit(stored, now, rng)
        if index is None:
            return None
        chosen = stored[index].id
        text = keyinitstore.keyinit_json(db, chosen)
        if delete and not keyinitstore.consume(db, chosen):
            raise RuntimeError(f"KeyInit {chosen} vanished under the write lock")
        return text

    text = write(take)
    if text is None:
        raise NoKeyinit("no current KeyInit for this sigkeyhash: use the identity's static "
                        "keys if its preferences allow, or try again later")
    return text


def flush_keyinits(db: Database, write: Write, key_hash: bytes, body: dict, now: int,
                   policy: Policy) -> int:
    """FlushKeyInit: delete every KeyInit of ``key_hash``; return how many unexpired ones
    went.

    Order of checks: ``NOT_FOUND`` (no KeyInit was ever stored for this sigkeyhash, or
    its sigkey is no longer its identity's current one) → ``check_flush``'s shape →
    time and replay → signature. The signed object names one repository URI; any of
    this server's is accepted, as they name the same repository.
    """

    def flush(db: Database) -> int:
        state = keyinitstore.flush_state(db, key_hash)
        if state is None or keyinitstore.sigkey_owner(db, state.sigkey) is None:
            raise NotFound("no KeyInits of a current sigkey were ever stored under this "
                           "sigkeyhash")
        ts = _check_flush_any(body, state, key_hash, now, policy.repouris)
        keyinitstore.record_flush(db, key_hash, ts)
        keyinitstore.purge_expired(db, now, key_hash)
        return keyinitstore.delete_all(db, key_hash)

    return write(flush)


def _check_flush_any(body: dict, state: keyinitstore.FlushState, key_hash: bytes, now: int,
                     repouris: tuple[str, ...]) -> int:
    """``check_flush`` for the first of ``repouris`` the signature verifies with."""
    first: InvalidSignature | None = None
    for repouri in repouris:
        try:
            return check_flush(body, sigkey_pubkey=state.sigkey, repouri=repouri,
                               sigkeyhash=key_hash, now_ms=now,
                               last_flush_ts=state.last_flush_ts)
        except InvalidSignature as exc:
            first = first or exc
    assert first is not None, "a server has at least one KeyInit repository URI"
    raise first


# --- HTTP ----------------------------------------------------------------------------

def _path_sigkeyhash(value: str) -> bytes:
    return b64url_decode(value, "sigkeyhash (32 bytes, unpadded base64url)", length=32)


def _limiters() -> tuple[SlidingWindow, SlidingWindow]:
    """This process's fetch limits: per client address, per sigkeyhash."""
    app = current_app
    limiters = app.extensions.get("keyserver.keyinit_fetch_limits")
    if limiters is None:
        limiters = app.extensions.setdefault("keyserver.keyinit_fetch_limits", (
            SlidingWindow(app.config["KEYINIT_FETCH_RATE_PER_ADDRESS"]),
            SlidingWindow(app.config["KEYINIT_FETCH_RATE_PER_SIGKEYHASH"])))
    return limiters


def _rate_limit(key_hash: bytes, now: int) -> None:
    per_address, per_sigkeyhash = _limiters()
    if not per_address.acquire(request.remote_addr, now):
        raise RateLimited(f"more than {per_address.limit} KeyInit fetches a minute from "
                          "your address: retry in a minute")
    if not per_sigkeyhash.acquire(key_hash, now):
        raise RateLimited(f"more than {per_sigkeyhash.limit} KeyInit fetches a minute for "
                          "this sigkeyhash: retry in a minute")


@bp.post("")
def add() -> Response:
    receipt = add_keyinits(get_db(), write, json_body(), now_ms(), Policy.from_app(current_app),
                           charger(request.headers.get("Authorization")))
    return jsonify(receipt)


@bp.post("/<key_hash>/fetch")
def fetch(key_hash: str) -> Response:
    parsed = _path_sigkeyhash(key_hash)
    now = now_ms()
    _rate_limit(parsed, now)
    rng = current_app.extensions.get(RNG, _SYSTEM_RANDOM)
    keyinit = fetch_keyinit(get_db(), write, parsed, now, rng)
    # Stored as canonical JSON already: wrapped as is rather than parsed and re-encoded
    # (the hot path of the repository; jsonify would produce the same bytes).
    return Response(f'{{"keyinit":{keyinit}}}\n', mimetype="application/json")


@bp.post("/<key_hash>/flush")
def flush(key_hash: str) -> Response:
    parsed = _path_sigkeyhash(key_hash)
    flushed = flush_keyinits(get_db(), write, parsed, json_body(), now_ms(),
                             Policy.from_app(current_app))
    return jsonify(flushed=flushed)

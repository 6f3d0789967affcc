"""The client side of the KeyInit repository (§9, §13 steps 3–4): the owner
publishes and flushes KeyInits and asks how many are left, a sender fetches and
opens one.

The owner keeps each KeyInit's X25519 private key in the keystore
(``<identity>.pf.<msgcount>``): a sender who fetched the KeyInit will start a
session with it. KeyInit msgcounts must grow forever per sigkey, also across
machines and lost state, so a batch starts at the larger of the last msgcount
used here plus one and the current time in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import nacl.public

from .accounts import CLOCK_MARGIN_MS, Accounts, Written, key_name
from .clock import now_ms
from .protocol.errors import ClientError, NoKeyinit, NotFound, ProtocolError, VerificationError
from .protocol.keyinit import (STATUS, SessionAnchor, Skipped, build_keyinit,
                               build_session_anchor, choose_repositories, keyinit_hash,
                               open_keyinit, sigkeyhash, sign_flush, sign_owner_request)
from .protocol.keys import X25519, KeyEntry, ed25519_entry
from .protocol.wire import KeyInitReceipt, KeyInitStatus
from .session import ServerSession
from .transport.api import KeyserverAPI
from .trust.history import LookupResult
from .trust.keyring import check_server_signature


@dataclass(frozen=True)
class Published:
    count: int
    #: How many of the ``count`` are fallback KeyInits.
    fallbacks: int
    not_after_ts: int
    repouri: str


@dataclass(frozen=True)
class Updated:
    """An update (``Accounts.update``) and what became of the KeyInits of the replaced
    signing key, which the server deletes with the update (§9)."""

    written: Written
    #: What the replaced key had on the server (None: the server would not say).
    had: KeyInitStatus | None
    #: The batch published under the new key in their place.
    republished: Published | None = None
    #: Why they were not replaced (no token, a refusal), to tell the user.
    not_republished: str | None = None


@dataclass(frozen=True)
class Fetched:
    """A KeyInit a sender fetched and verified, and its opened session anchor."""

    identity: str
    repouri: str
    keyinit: dict
    anchor: SessionAnchor
    #: The identity's repositories the client did not contact (§9), to tell the user.
    skipped: tuple[Skipped, ...] = ()

    def to_json(self) -> dict:
        contents = self.keyinit["contents"]
        return {"identity": self.identity, "repouri": self.repouri,
                "msgcount": contents["msgcount"], "fallback": contents["fallback"],
                "not_before_ts": contents["not_before_ts"],
                "not_after_ts": contents["not_after_ts"],
                "sessionanchor": {"mixaddress": self.anchor.mixaddress,
                                  "nymaddress": self.anchor.nymaddress,
                                  "pfkeys": [key.to_json() for key in self.anchor.pfkeys]}}


def _repouri(session: ServerSession) -> str:
    uris = session.capabilities.keyinitrepository_uris
    if not uris:
        raise VerificationError(f"{session.server} names no KeyInit repository")
    return uris[0]


def publish(session: ServerSession, accounts: Accounts, identity: str, count: int, *,
            fallback: bool = False, lifetime_ms: int | None = None) -> Published:
    """Make, upload and pay for ``count`` KeyInits of ``identity``, one of the
    user's ``accounts`` on the server of ``session`` (one batch)."""
    return _publish(session, accounts, identity, [fallback] * count, lifetime_ms)


def update(session: ServerSession, accounts: Accounts, identity: str) -> Updated:
    """``Accounts.update`` that keeps senders able to reach ``identity``: the server
    deletes the replaced key's KeyInits with the update (§9), so as many of each kind
    are published under the new key, in one batch (one token; at most a batch's
    worth, fallback ones first). Without a token for it, or refused, the update
    stands and ``Updated.not_republished`` says why."""
    try:
        had: KeyInitStatus | None = status(session, accounts, identity)
    except NotFound:
        had = KeyInitStatus(0, 0, None)   # none ever published under this key
    except ProtocolError:
        had = None   # a repository without the status request: nothing known to copy
    written = accounts.update(identity)
    if had is None or not (had.stored or had.fallback):
        return Updated(written, had)
    room = session.limits.max_keyinits_per_request
    fallbacks = min(had.fallback, room)
    kinds = [True] * fallbacks + [False] * min(had.stored, room - fallbacks)
    try:
        return Updated(written, had, republished=_publish(session, accounts, identity, kinds))
    except (ClientError, ProtocolError) as exc:
        return Updated(written, had, not_republished=str(exc))


def _publish(session: ServerSession, accounts: Accounts, identity: str, kinds: list[bool],
             lifetime_ms: int | None = None) -> Published:
    """One batch of KeyInits, a fallback one for each True of ``kinds``."""
    limits = session.limits
    count = len(kinds)
    if not 1 <= count <= limits.max_keyinits_per_request:
        raise ClientError(f"{session.server} takes 1 to {limits.max_keyinits_per_request} "
                          "KeyInits per request")
    current = accounts.current(identity)
    if not current.is_current(now_ms()):
        raise ClientError(f"{identity} is not current: update it first ('keyclient update')")
    sigkey = accounts.own_sigkey(identity, current)
    session.require_tokens("add_keyinit")
    keystore = accounts.keystore
    assert keystore is not None
    repouri = _repouri(session)
    now = now_ms()
    lifetime = min(lifetime_ms or limits.max_keyinit_lifetime_ms,
                   limits.max_keyinit_lifetime_ms - CLOCK_MARGIN_MS)
    not_after_ts = min(now + lifetime, current.message.not_after_ts)
    key_hash = sigkeyhash(bytes(sigkey.verify_key))
    first = session.home.reserve_msgcounts(session.server, key_hash, count, now)
    keyinits, names = [], []
    for msgcount, fallback in zip(range(first, first + count), kinds):
        private = nacl.public.PrivateKey.generate()
        names.append(key_name(identity, f"pf.{msgcount}"))
        keystore.put_private_key(names[-1], private)
        anchor = build_session_anchor([KeyEntry(X25519, bytes(private.public_key))])
        keyinits.append(build_keyinit(sigkey, msgcount=msgcount, not_before_ts=now -
                                      CLOCK_MARGIN_MS, not_after_ts=not_after_ts,
                                      fallback=fallback, repouri=repouri, anchor=anchor))
    session.progress(f"uploading {count} KeyInit(s) to {repouri}")
    try:
        with session.payment("add_keyinit") as authorization:
            receipt = session.api.add_keyinit(ed25519_entry(sigkey), keyinits, authorization)
    except ProtocolError:
        for name in names:   # refused: nothing was stored
            keystore.delete(name)
        raise
    _check_receipt(session, receipt, key_hash, keyinits)
    return Published(count, sum(kinds), not_after_ts, repouri)


def _check_receipt(session: ServerSession, receipt: KeyInitReceipt, key_hash: bytes,
                   keyinits: list[dict]) -> None:
    """The signed receipt must name exactly our batch and be signed by the server key
    the chain says is current (§11.3)."""
    if receipt.sigkeyhash != key_hash or \
            receipt.keyinit_hashes != tuple(keyinit_hash(k) for k in keyinits):
        raise VerificationError("the KeyInit receipt does not name the uploaded batch")
    check_server_signature(receipt.raw, receipt.ts, session.server, session.keys,
                           session.chain.length - 1, "the KeyInit receipt", session.keyring)


def flush(session: ServerSession, accounts: Accounts, identity: str) -> int:
    """Delete all of ``identity``'s KeyInits in the repository of ``session``'s server."""
    current = accounts.current(identity)
    sigkey = accounts.own_sigkey(identity, current)
    key_hash = sigkeyhash(bytes(sigkey.verify_key))
    body = sign_flush(sigkey, _repouri(session), key_hash, now_ms())
    return session.api.flush_keyinit(key_hash, body)


def status(session: ServerSession, accounts: Accounts, identity: str) -> KeyInitStatus:
    """How many of ``identity``'s KeyInits the repository of ``session``'s server still
    holds: a request signed like a flush (our extension of §9), since only the owner
    may watch the count."""
    current = accounts.current(identity)
    sigkey = accounts.own_sigkey(identity, current)
    key_hash = sigkeyhash(bytes(sigkey.verify_key))
    body = sign_owner_request(STATUS, sigkey, _repouri(session), key_hash, now_ms())
    return session.api.keyinit_status(key_hash, body)


def fetch(session: ServerSession, identity: str,
          found: Callable[[LookupResult], None] = lambda result: None) -> Fetched:
    """As a sender: find ``identity`` on the verified chain (as far as a quorum of
    witnesses cosigned it, when the user requires one: ``trusted_lookup``), fetch one
    of its KeyInits from the repositories its UIDMessage names that its keyserver
    vouches for (§9), verify it and open its anchor. The repositories skipped are in ``Fetched.skipped``
    (and in the error when none can be contacted). ``found`` is given the verified
    lookup before anything else is checked or fetched (to tell the user whether
    the keys changed since they last saw them, also when the fetch then fails)."""
    session.sync()
    session.progress(f"looking up {identity} on the chain")
    trusted = session.trusted_lookup(identity)
    result = trusted.result
    if result is None:
        raise ClientError(trusted.pending() or f"{identity} is not on {session.server}'s chain")
    found(result)
    now = now_ms()
    if not result.is_current(now):
        raise ClientError(f"{identity}'s keys are expired: do not use them")
    sigkey = result.message.sigkey
    listed = result.message.repouris
    # Without repouris the repository is the keyserver itself, which the user chose.
    usable, skipped = (choose_repositories(listed, session.capabilities.keyinitrepository_uris,
                                           session.server)
                       if listed else ((session.api.base_url,), ()))
    if not usable:
        raise ClientError(f"none of {identity}'s KeyInit repositories may be contacted: "
                          f"{_skipped_text(skipped)}")
    for repouri in usable:
        api = (session.api if repouri == session.api.base_url
               else KeyserverAPI(repouri, session.api.fetcher))
        session.progress(f"fetching a KeyInit from {repouri}")
        try:
            keyinit = api.fetch_keyinit(sigkeyhash(sigkey.pubkey))
        except NoKeyinit:
            continue
        anchor = open_keyinit(keyinit, sigkey=sigkey, now_ms=now)
        made_for = keyinit["contents"]["repouri"]   # its shape is checked by now
        if made_for not in (listed or usable):
            raise VerificationError(f"the KeyInit was made for {made_for!r}, a repository "
                                    f"{identity} does not list")
        return Fetched(identity, repouri, keyinit, anchor, skipped)
    also = f" (skipped: {_skipped_text(skipped)})" if skipped else ""
    raise NoKeyinit(f"no KeyInit of {identity} is available in {', '.join(usable)}{also}")


def _skipped_text(skipped: tuple[Skipped, ...]) -> str:
    return "; ".join(f"{item.uri}: {item.reason}" for item in skipped)

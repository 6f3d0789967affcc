"""KeyInit messages (§9): session anchors, KeyInits, and the rules for adding,
fetching and flushing them (and for the owner's status request, our extension).

Shared by the server (which applies the add, fetch and flush rules) and the
sender's client (which opens a fetched KeyInit). Everything here is pure: parsed
objects and ``now_ms`` in, a value out or a typed error raised; randomness comes
from a caller's ``random.Random`` so that the fetch choice can be tested.
"""

from __future__ import annotations

import os
import random
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import nacl.bindings
import nacl.exceptions
import nacl.signing

from .encoding import (b64decode, b64encode, canonical_json, parse_json_object, require_fields,
                       require_int, require_str, sha256)
from .errors import (InvalidMessage, InvalidSignature, InvalidValidity, KeyinitLimit,
                     MsgcountMismatch, ProtocolError, VerificationError)
from .keys import ED25519, X25519, KeyEntry, parse_key_entry, sign_detached, verify_detached
from .urls import URLError, check_private_transport

VERSION = "1"
NONCE_SIZE = 24
#: crypto_secretbox's authenticator, which precedes the ciphertext.
MAC_SIZE = 16
#: How far a flush's ``ts`` may be from server time (§9).
FLUSH_WINDOW_MS = 5 * 60 * 1000

ANCHOR_FIELDS = frozenset({"mixaddress", "nymaddress", "pfkeys"})
CONTENTS_FIELDS = frozenset({
    "version", "msgcount", "not_before_ts", "not_after_ts", "fallback", "sigkeyhash",
    "repouri", "sessionanchor", "sessionanchorhash",
})
KEYINIT_FIELDS = frozenset({"contents", "signature"})
ADD_REQUEST_FIELDS = frozenset({"sigkey", "keyinits"})
#: The body of a flush, and of a status request (our extension of §9).
FLUSH_FIELDS = frozenset({"ts", "signature"})


# --- Session anchors -------------------------------------------------------------

@dataclass(frozen=True)
class SessionAnchor:
    """The secret part of a KeyInit: where and with which X25519 keys to reach its owner.

    ``nymaddress`` is a plain string here (§9), unlike UIDContent's base64 one.
    """

    mixaddress: str
    nymaddress: str
    pfkeys: tuple[KeyEntry, ...]


def build_session_anchor(pfkeys: Iterable[KeyEntry], mixaddress: str = "",
                         nymaddress: str = "") -> dict:
    """A SessionAnchor object; a sender needs at least one pfkey to start a session."""
    keys = list(pfkeys)
    if not keys or any(key.function != X25519 for key in keys):
        raise ValueError("a session anchor needs at least one x25519 pfkey, and only those")
    return {"mixaddress": mixaddress, "nymaddress": nymaddress,
            "pfkeys": [key.to_json() for key in keys]}


def parse_session_anchor(obj: Any, what: str = "sessionanchor") -> SessionAnchor:
    """Exact fields, string addresses, one or more valid X25519 pfkeys; else ``InvalidMessage``."""
    require_fields(obj, ANCHOR_FIELDS, what)
    pfkeys = obj["pfkeys"]
    if not isinstance(pfkeys, list) or not pfkeys:
        raise InvalidMessage(f"{what}.pfkeys: must be a non-empty list")
    return SessionAnchor(
        mixaddress=require_str(obj["mixaddress"], f"{what}.mixaddress"),
        nymaddress=require_str(obj["nymaddress"], f"{what}.nymaddress"),
        pfkeys=tuple(parse_key_entry(key, f"{what}.pfkeys[{i}]", X25519)
                     for i, key in enumerate(pfkeys)),
    )


def sigkeyhash(sigkey_pubkey: bytes) -> bytes:
    """SHA256(SHA256(pubkey)): the server's index, which it can compute from the sigkey
    yet which does not reveal the anchor's key SHA256(pubkey)."""
    return sha256(sha256(sigkey_pubkey))


def encrypt_session_anchor(anchor: dict, sigkey_pubkey: bytes,
                           nonce: bytes | None = None) -> bytes:
    """nonce24 || crypto_secretbox(canonical(anchor)) under SHA256(sigkey.pubkey), so that
    only who found the identity's UIDMessage can open it. No leading key hash, unlike §5."""
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    assert len(nonce) == NONCE_SIZE, "nonce must be 24 bytes"
    return nonce + nacl.bindings.crypto_secretbox(canonical_json(anchor), nonce,
                                                  sha256(sigkey_pubkey))


def decrypt_session_anchor(sessionanchor: bytes, sigkey_pubkey: bytes) -> bytes:
    """The plaintext (canonical SessionAnchor bytes); ``VerificationError`` if it does not open."""
    if len(sessionanchor) < NONCE_SIZE + MAC_SIZE:
        raise VerificationError("sessionanchor is too short to be a secretbox")
    try:
        return nacl.bindings.crypto_secretbox_open(sessionanchor[NONCE_SIZE:],
                                                   sessionanchor[:NONCE_SIZE],
                                                   sha256(sigkey_pubkey))
    except nacl.exceptions.CryptoError:
        raise VerificationError("sessionanchor does not open with this sigkey") from None


# --- KeyInit ---------------------------------------------------------------------

@dataclass(frozen=True)
class KeyInit:
    """A KeyInit whose shape and encodings have been checked (not its rules)."""

    raw: dict
    msgcount: int
    not_before_ts: int
    not_after_ts: int
    fallback: bool
    sigkeyhash: bytes
    repouri: str
    sessionanchor: bytes
    sessionanchorhash: bytes
    signature: bytes

    @property
    def contents_bytes(self) -> bytes:
        """What ``signature`` covers."""
        return canonical_json(self.raw["contents"])

    @property
    def hash(self) -> bytes:
        """The receipt's ``keyinit_hashes`` entry for this KeyInit."""
        return keyinit_hash(self.raw)


def build_keyinit(signing_key: nacl.signing.SigningKey, *, msgcount: int, not_before_ts: int,
                  not_after_ts: int, fallback: bool, repouri: str, anchor: dict,
                  nonce: bytes | None = None) -> dict:
    """A signed KeyInit carrying ``anchor`` sealed to the signing key's public half."""
    pubkey = bytes(signing_key.verify_key)
    contents = {
        "version": VERSION,
        "msgcount": msgcount,
        "not_before_ts": not_before_ts,
        "not_after_ts": not_after_ts,
        "fallback": fallback,
        "sigkeyhash": b64encode(sigkeyhash(pubkey)),
        "repouri": repouri,
        "sessionanchor": b64encode(encrypt_session_anchor(anchor, pubkey, nonce)),
        "sessionanchorhash": b64encode(sha256(canonical_json(anchor))),
    }
    return {"contents": contents,
            "signature": b64encode(sign_detached(signing_key, canonical_json(contents)))}


def keyinit_hash(keyinit: dict) -> bytes:
    """SHA256(canonical(KeyInit)), by which the add receipt names what was stored."""
    return sha256(canonical_json(keyinit))


def parse_keyinit(obj: Any, what: str = "keyinit") -> KeyInit:
    """Check shape and encodings (§9): exact fields, ``version == "1"``, integers, a real
    boolean ``fallback``, exact base64 lengths; else ``InvalidMessage``.

    ``what`` names the item in messages, e.g. ``keyinits[3]`` for a batch.
    """
    require_fields(obj, KEYINIT_FIELDS, what)
    contents = require_fields(obj["contents"], CONTENTS_FIELDS, f"{what}.contents")
    where = f"{what}.contents"
    if contents["version"] != VERSION:
        raise InvalidMessage(f"{where}.version: must be {VERSION!r}")
    if type(contents["fallback"]) is not bool:
        raise InvalidMessage(f"{where}.fallback: must be true or false")
    sessionanchor = b64decode(contents["sessionanchor"], f"{where}.sessionanchor")
    if len(sessionanchor) < NONCE_SIZE + MAC_SIZE:
        raise InvalidMessage(f"{where}.sessionanchor: must hold a 24-byte nonce and a "
                             "secretbox (at least 40 bytes)")
    return KeyInit(
        raw=obj,
        msgcount=require_int(contents["msgcount"], f"{where}.msgcount"),
        not_before_ts=require_int(contents["not_before_ts"], f"{where}.not_before_ts"),
        not_after_ts=require_int(contents["not_after_ts"], f"{where}.not_after_ts"),
        fallback=contents["fallback"],
        sigkeyhash=b64decode(contents["sigkeyhash"], f"{where}.sigkeyhash", length=32),
        repouri=require_str(contents["repouri"], f"{where}.repouri"),
        sessionanchor=sessionanchor,
        sessionanchorhash=b64decode(contents["sessionanchorhash"],
                                    f"{where}.sessionanchorhash", length=32),
        signature=b64decode(obj["signature"], f"{what}.signature", length=64),
    )


def parse_add_request(obj: Any, *,
                      max_per_request: int) -> tuple[KeyEntry, tuple[KeyInit, ...]]:
    """The body of POST /v1/keyinits (§12): ``{"sigkey": KeyEntry, "keyinits": [...]}``.

    The batch's size (1 to ``max_per_request``) is checked before any item is
    parsed, so a refused batch costs the same however many items it carries."""
    require_fields(obj, ADD_REQUEST_FIELDS, "request")
    sigkey = parse_key_entry(obj["sigkey"], "sigkey", ED25519)
    if not isinstance(obj["keyinits"], list):
        raise InvalidMessage("keyinits: must be a list")
    _check_batch_size(len(obj["keyinits"]), max_per_request)
    return sigkey, tuple(parse_keyinit(item, f"keyinits[{i}]")
                         for i, item in enumerate(obj["keyinits"]))


# --- Adding (server) -------------------------------------------------------------

def check_keyinit_batch(keyinits: Sequence[KeyInit], *, sigkey: KeyEntry,
                        repouris: Collection[str], last_msgcount: int | None,
                        identity_not_after_ts: int, now_ms: int, max_lifetime_ms: int,
                        max_per_request: int, stored_count: int, max_stored: int) -> None:
    """The add rules of §9, all or nothing: return when the whole batch may be stored.

    The caller has found ``sigkey`` to be the current sigkey of a current identity
    (else ``NOT_FOUND``); ``last_msgcount`` is the largest msgcount ever accepted for
    its sigkeyhash (None if none); ``stored_count`` counts its stored, unexpired KeyInits.

    Following §4.2.1, every item passes one stage before any item enters the next,
    so the first failing stage decides the errcode whichever item fails it:
      1. shape (``INVALID_MESSAGE``): 1..max_per_request items; msgcount strictly
         increasing within the batch;
      2. key and repository (``INVALID_MESSAGE``): sigkeyhash of ``sigkey``; repouri
         one of ``repouris``;
      3. state: msgcount above ``last_msgcount`` (``MSGCOUNT_MISMATCH``, the errcode
         §4.2.1 uses for a msgcount that conflicts with stored state); the stored
         limit (``KEYINIT_LIMIT``);
      4. validity (``INVALID_VALIDITY``);
      5. signature (``INVALID_SIGNATURE``), last because it costs the most.
    """
    check_keyinit_shape(keyinits, sigkey=sigkey, repouris=repouris,
                        max_per_request=max_per_request)
    _check_state(keyinits, last_msgcount, stored_count, max_stored)
    limit_ts = min(identity_not_after_ts, now_ms + max_lifetime_ms)
    for i, keyinit in enumerate(keyinits):
        _check_validity(keyinit, f"keyinits[{i}]", now_ms, limit_ts)
    for i, keyinit in enumerate(keyinits):
        if not verify_detached(sigkey.pubkey, keyinit.contents_bytes, keyinit.signature):
            raise InvalidSignature(f"keyinits[{i}].signature does not verify with sigkey: "
                                   "sign canonical(contents) with the identity's current sigkey")


def check_keyinit_shape(keyinits: Sequence[KeyInit], *, sigkey: KeyEntry,
                        repouris: Collection[str], max_per_request: int) -> None:
    """Stages 1 and 2 of ``check_keyinit_batch``, which need no stored state: the
    server runs them before the token step and the state-bound rest after it."""
    _check_shape(keyinits, max_per_request)
    _check_key(keyinits, sigkey, repouris)


def _check_batch_size(count: int, max_per_request: int) -> None:
    if not 1 <= count <= max_per_request:
        raise InvalidMessage(f"keyinits: send 1 to {max_per_request} KeyInits per request, "
                             f"not {count}")


def _check_shape(keyinits: Sequence[KeyInit], max_per_request: int) -> None:
    _check_batch_size(len(keyinits), max_per_request)
    for i in range(1, len(keyinits)):
        if keyinits[i].msgcount <= keyinits[i - 1].msgcount:
            raise InvalidMessage(f"keyinits[{i}].contents.msgcount: must be greater than "
                                 f"keyinits[{i - 1}]'s ({keyinits[i - 1].msgcount}); "
                                 "order the batch by increasing msgcount")


def _check_key(keyinits: Sequence[KeyInit], sigkey: KeyEntry,
               repouris: Collection[str]) -> None:
    expected = sigkeyhash(sigkey.pubkey)
    for i, keyinit in enumerate(keyinits):
        if keyinit.sigkeyhash != expected:
            raise InvalidMessage(f"keyinits[{i}].contents.sigkeyhash: must be "
                                 f"{b64encode(expected)}, SHA256(SHA256(sigkey.pubkey))")
    for i, keyinit in enumerate(keyinits):
        if keyinit.repouri not in repouris:
            raise InvalidMessage(f"keyinits[{i}].contents.repouri: {keyinit.repouri!r} is not "
                                 f"a KeyInit repository of this server "
                                 f"({', '.join(sorted(repouris))})")


def _check_state(keyinits: Sequence[KeyInit], last_msgcount: int | None,
                 stored_count: int, max_stored: int) -> None:
    # The batch is increasing, so its first item is the one to compare.
    if last_msgcount is not None and keyinits[0].msgcount <= last_msgcount:
        raise MsgcountMismatch(f"keyinits[0].contents.msgcount: must be greater than "
                               f"{last_msgcount}, the largest ever accepted for this sigkey")
    if stored_count + len(keyinits) > max_stored:
        raise KeyinitLimit(f"{stored_count} KeyInits are stored and at most {max_stored} may "
                           f"be: send at most {max(max_stored - stored_count, 0)}, or flush")


def _check_validity(keyinit: KeyInit, what: str, now_ms: int, limit_ts: int) -> None:
    if keyinit.not_before_ts >= keyinit.not_after_ts:
        raise InvalidValidity(f"{what}: not_before_ts must be before not_after_ts")
    if keyinit.not_after_ts <= now_ms:
        raise InvalidValidity(f"{what}: not_after_ts must be in the future (now is {now_ms})")
    if keyinit.not_after_ts > limit_ts:
        raise InvalidValidity(f"{what}: not_after_ts must be at most {limit_ts}, the earlier "
                              "of the identity's not_after_ts and now + MAX_KEYINIT_LIFETIME")


# --- Fetching (server) -----------------------------------------------------------

class Validity(Protocol):
    """What the fetch choice needs of a stored KeyInit; ``KeyInit`` and ``Candidate`` fit."""

    @property
    def not_before_ts(self) -> int: ...

    @property
    def not_after_ts(self) -> int: ...

    @property
    def fallback(self) -> bool: ...


@dataclass(frozen=True)
class Candidate:
    """A stored KeyInit as the fetch choice sees it (e.g. built from a database row)."""

    not_before_ts: int
    not_after_ts: int
    fallback: bool


def is_current(keyinit: Validity, now_ms: int) -> bool:
    """Current while ``not_before_ts <= now < not_after_ts``, as for identities (§4.3)."""
    return keyinit.not_before_ts <= now_ms < keyinit.not_after_ts


def choose_keyinit(candidates: Sequence[Validity], now_ms: int,
                   rng: random.Random) -> tuple[int | None, bool]:
    """Which candidate a fetch returns, and whether to delete it (§9); ``(None, False)``
    when none is current (``NO_KEYINIT``).

    A current non-fallback one always wins: the one that expires first (the first
    given on a tie), deleted. Otherwise a current fallback one is drawn with weight
    ``1 / n``, ``n = not_after_ts - now_ms`` its remaining lifetime (>= 1 ms), so one
    with a tenth of the lifetime left is ten times as likely: spent before it expires
    unused, while the long-lived ones stay. It is deleted only when other current
    fallback ones remain and ``r > n``, with ``r`` uniform in ``(0, m)`` and ``m`` the
    largest remaining lifetime among them (so with probability ``(m - n) / m``; the
    longest-lived one is never deleted). Only ``rng.random()`` is used: once for the
    draw when there are several, once (redrawn if 0) for ``r`` when deletion is possible.
    """
    current = [i for i, c in enumerate(candidates) if is_current(c, now_ms)]
    ephemeral = [i for i in current if not candidates[i].fallback]
    if ephemeral:
        return min(ephemeral, key=lambda i: (candidates[i].not_after_ts, i)), True
    if not current:
        return None, False
    remaining = [candidates[i].not_after_ts - now_ms for i in current]
    if len(current) == 1:
        return current[0], False
    weights = [1 / n for n in remaining]
    x = rng.random() * sum(weights)
    pick = len(current) - 1
    for k, weight in enumerate(weights):
        if x < weight:
            pick = k
            break
        x -= weight
    n, m = remaining[pick], max(remaining)
    r = 0.0
    while not 0 < r < m:
        r = rng.random() * m
    return current[pick], r > n


# --- The owner's signed requests: flushing (§9) and status (our extension) ---------

#: The actions an owner signs; naming it keeps one request from passing for another.
FLUSH, STATUS = "flush", "status"


def owner_request_bytes(action: str, repouri: str, sigkeyhash_b64: str, ts: int) -> bytes:
    """What an owner's request signature covers; naming the action and the repository
    keeps it from being replayed as another request or against another repository."""
    return canonical_json({"action": action, "repouri": repouri,
                           "sigkeyhash": sigkeyhash_b64, "ts": ts})


def sign_owner_request(action: str, signing_key: nacl.signing.SigningKey, repouri: str,
                       sigkeyhash: bytes, ts: int) -> dict:
    """The body ``{"ts", "signature"}`` of a flush or status request; ``sigkeyhash`` is
    the raw 32 bytes."""
    data = owner_request_bytes(action, repouri, b64encode(sigkeyhash), ts)
    return {"ts": ts, "signature": b64encode(sign_detached(signing_key, data))}


def check_owner_request(action: str, body: Any, *, sigkey_pubkey: bytes, repouri: str,
                        sigkeyhash: bytes, now_ms: int, last_ts: int | None = None) -> int:
    """Accept the body of an owner's ``action`` request and return its ``ts``.

    Order as in §4.2.1: shape (``INVALID_MESSAGE``), then time (``INVALID_VALIDITY``:
    within 5 minutes of ``now_ms`` inclusive, and after ``last_ts`` when given, so a
    captured flush cannot be replayed), then the signature (``INVALID_SIGNATURE``).
    """
    require_fields(body, FLUSH_FIELDS, action)
    ts = require_int(body["ts"], f"{action}.ts")
    signature = b64decode(body["signature"], f"{action}.signature", length=64)
    if abs(ts - now_ms) > FLUSH_WINDOW_MS:
        raise InvalidValidity(f"{action}.ts must be within {FLUSH_WINDOW_MS} ms of server "
                              f"time ({now_ms}): check your clock")
    if last_ts is not None and ts <= last_ts:
        raise InvalidValidity(f"{action}.ts must be after the last accepted {action} "
                              f"({last_ts})")
    data = owner_request_bytes(action, repouri, b64encode(sigkeyhash), ts)
    if not verify_detached(sigkey_pubkey, data, signature):
        raise InvalidSignature(f"{action}.signature does not verify: sign canonical "
                               f'{{"action": "{action}", "repouri", "sigkeyhash", "ts"}} '
                               "with the identity's current sigkey")
    return ts


def sign_flush(signing_key: nacl.signing.SigningKey, repouri: str, sigkeyhash: bytes,
               ts: int) -> dict:
    """The flush body ``{"ts", "signature"}``; ``sigkeyhash`` is the raw 32 bytes."""
    return sign_owner_request(FLUSH, signing_key, repouri, sigkeyhash, ts)


# --- Choosing repositories (sender's client) --------------------------------------

@dataclass(frozen=True)
class Skipped:
    """A repository URI of an identity that the sender's client will not contact, and why."""

    uri: str
    reason: str


def choose_repositories(repouris: Iterable[str], vouched: Collection[str],
                        server: str) -> tuple[tuple[str, ...], tuple[Skipped, ...]]:
    """The ``repouris`` a sender may contact, in order, and the ones it must skip (§9,
    revision 2).

    The identity's owner chose its ``repouris``, so only those the identity's
    keyserver ``server`` vouches for (``vouched``: its verified capabilities'
    ``keyinitrepository_uris``) are usable, and only over https (http to a loopback
    host only): a fetch names the sigkeyhash, which an eavesdropper must not read.
    """
    usable: list[str] = []
    skipped: list[Skipped] = []
    for uri in repouris:
        if uri not in vouched:
            skipped.append(Skipped(uri, f"not a KeyInit repository {server} vouches for"))
            continue
        try:
            check_private_transport(uri)
        except URLError as exc:
            skipped.append(Skipped(uri, str(exc)))
            continue
        usable.append(uri)
    return tuple(usable), tuple(skipped)


# --- Opening (sender's client) ---------------------------------------------------

def open_keyinit(keyinit: Any, *, sigkey: KeyEntry, now_ms: int,
                 repouri: str | None = None) -> SessionAnchor:
    """Verify a fetched KeyInit against the identity's current sigkey and return its anchor.

    Checks (§9, last paragraph): shape, sigkeyhash, signature, validity window, the
    repository when ``repouri`` is given, decryption, sessionanchorhash, anchor shape.
    Any failure is a ``VerificationError``: the server or the KeyInit is not trusted.
    """
    try:
        parsed = parse_keyinit(keyinit)
    except InvalidMessage as exc:
        raise VerificationError(f"malformed KeyInit: {exc}") from None
    if parsed.sigkeyhash != sigkeyhash(sigkey.pubkey):
        raise VerificationError("KeyInit belongs to another sigkey (sigkeyhash differs)")
    if not verify_detached(sigkey.pubkey, parsed.contents_bytes, parsed.signature):
        raise VerificationError("KeyInit signature does not verify with the identity's sigkey")
    if not is_current(parsed, now_ms):
        raise VerificationError(f"KeyInit is not valid now ({now_ms} is outside "
                                f"[{parsed.not_before_ts}, {parsed.not_after_ts}))")
    if repouri is not None and parsed.repouri != repouri:
        raise VerificationError(f"KeyInit was made for {parsed.repouri!r}, "
                                f"not {repouri!r}")
    plaintext = decrypt_session_anchor(parsed.sessionanchor, sigkey.pubkey)
    if sha256(plaintext) != parsed.sessionanchorhash:
        raise VerificationError("session anchor does not match sessionanchorhash")
    try:
        obj = parse_json_object(plaintext)
        if canonical_json(obj) != plaintext:
            raise InvalidMessage("session anchor is not canonical JSON")
        return parse_session_anchor(obj)
    except (ProtocolError, ValueError) as exc:
        raise VerificationError(f"malformed session anchor: {exc}") from None

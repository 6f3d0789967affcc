"""UIDMessages (§4) and their encrypted storage form (§5).

Building and signing live here so that the CLI, the server's own identity
(§7.2) and the load generator all produce messages the same way.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Any, Iterable

import nacl.bindings
import nacl.exceptions
import nacl.signing

from .encoding import (b64decode, b64encode, canonical_json, require_fields, require_int,
                       require_str, sha256)
from .errors import InvalidMessage, VerificationError
from .keys import ED25519, X25519, KeyEntry, ed25519_entry, parse_key_entry, sign_detached
from .note import VerifierKey, format_verifier_key, parse_verifier_key

VERSION = "1"
NONCE_SIZE = 24
FORWARDSEC = ("strict", "mandatory", "optional")
CONTENT_FIELDS = frozenset({
    "version", "identity", "msgcount", "not_before_ts", "not_after_ts", "sigkey",
    "sigescrow", "pubkeys", "mixaddress", "nymaddress", "repouris", "preferences",
    "lastentry", "chainlink",
})
MESSAGE_FIELDS = frozenset({"content", "selfsignature", "usersignature", "escrowsignature"})
#: The list bounds of §4 (``INVALID_MESSAGE`` beyond), checked before any key is
#: parsed: each X25519 pubkey costs a scalar multiplication (the weak-key check), so
#: an unbounded list would let an unpaid request buy seconds of server CPU.
MAX_PUBKEYS = 8
MAX_REPOURIS = 4
MAX_CIPHERSUITES = 8
MAX_CIPHERSUITE_LENGTH = 64
#: §10.4: the token keys a server redeems, listed in its own messages.
MAX_TOKEN_KEYS = 2
TOKEN_KEY_ID_SIZE = 32
SERVER_FIELDS = frozenset({"log_vkey", "token_keys", "limits"})
SERVER_LIMIT_FIELDS = frozenset({"reclaim_grace_ms", "max_uid_lifetime_ms"})


@dataclass(frozen=True)
class ServerPreferences:
    """``preferences.server`` of the server's own messages (§4, revision 2): the log
    key, the token keys it redeems and the time limits, bound to the chain so that
    the server cannot show each client other ones (nor change them after the fact)."""

    log_vkey: VerifierKey
    token_keys: tuple[bytes, ...]
    reclaim_grace_ms: int
    max_uid_lifetime_ms: int


def format_server_preferences(server: ServerPreferences) -> dict:
    return {
        "log_vkey": format_verifier_key(server.log_vkey),
        "token_keys": [b64encode(key_id) for key_id in server.token_keys],
        "limits": {"reclaim_grace_ms": server.reclaim_grace_ms,
                   "max_uid_lifetime_ms": server.max_uid_lifetime_ms},
    }


def parse_server_preferences(obj: Any) -> ServerPreferences:
    """``preferences.server`` with every member present and none unknown: a log key
    in Go's verifier-key form, 0 to 2 distinct 32-byte token key ids, the two limits."""
    what = "content.preferences.server"
    require_fields(obj, SERVER_FIELDS, what)
    limits = require_fields(obj["limits"], SERVER_LIMIT_FIELDS, f"{what}.limits")
    token_keys = tuple(b64decode(key_id, f"{what}.token_keys[{i}]", length=TOKEN_KEY_ID_SIZE)
                       for i, key_id in enumerate(_bounded_list(
                           obj["token_keys"], MAX_TOKEN_KEYS, f"{what}.token_keys")))
    if len(set(token_keys)) != len(token_keys):
        raise InvalidMessage(f"{what}.token_keys: the keys must be distinct")
    return ServerPreferences(
        log_vkey=parse_verifier_key(obj["log_vkey"], f"{what}.log_vkey"),
        token_keys=token_keys,
        reclaim_grace_ms=require_int(limits["reclaim_grace_ms"],
                                     f"{what}.limits.reclaim_grace_ms"),
        max_uid_lifetime_ms=require_int(limits["max_uid_lifetime_ms"],
                                        f"{what}.limits.max_uid_lifetime_ms", minimum=1),
    )


@dataclass(frozen=True)
class UIDMessage:
    """A UIDMessage whose shape and encodings have been checked (not its rules)."""

    raw: dict
    identity: str
    msgcount: int
    not_before_ts: int
    not_after_ts: int
    sigkey: KeyEntry
    sigescrow: KeyEntry | None
    pubkeys: tuple[KeyEntry, ...]
    mixaddress: str
    nymaddress: bytes
    repouris: tuple[str, ...]
    forwardsec: str
    ciphersuites: tuple[str, ...]
    #: ``preferences.server``: only the server's own messages carry it (§4).
    server: ServerPreferences | None
    lastentry: bytes
    selfsignature: bytes
    usersignature: bytes
    escrowsignature: bytes

    @functools.cached_property
    def content_bytes(self) -> bytes:
        """What every signature of the message covers (computed once: it is hashed
        up to three times per request)."""
        return canonical_json(self.raw["content"])

    @property
    def key_hashes(self) -> tuple[bytes, ...]:
        """Hashes of sigkey and sigescrow: each may belong to one identity only (§4)."""
        return (self.sigkey.hash,) + ((self.sigescrow.hash,) if self.sigescrow else ())


def _bounded_list(value: Any, maximum: int, what: str) -> list:
    """A JSON list of at most ``maximum`` items (§4), its items not yet looked at."""
    if not isinstance(value, list):
        raise InvalidMessage(f"{what}: must be a list")
    if len(value) > maximum:
        raise InvalidMessage(f"{what}: at most {maximum} items, not {len(value)}")
    return value


def _str_list(value: Any, maximum: int, what: str,
              max_length: int | None = None) -> tuple[str, ...]:
    items = _bounded_list(value, maximum, what)
    for i, item in enumerate(items):
        require_str(item, f"{what}[{i}]")
        if max_length is not None and len(item) > max_length:
            raise InvalidMessage(f"{what}[{i}]: at most {max_length} characters")
    return tuple(items)


def _signature(value: Any, what: str, allow_empty: bool) -> bytes:
    return b64decode(value, what, length=64, allow_empty=allow_empty)


def parse_uid_message(obj: Any) -> UIDMessage:
    """Check shape and encodings (§4): every field present, none unknown, bounded
    lists, exact base64 lengths, valid keys, ``sigkey != sigescrow``; else
    ``InvalidMessage``. The list bounds come before the first key is parsed, so
    what a refused message costs does not grow with its lists."""
    require_fields(obj, MESSAGE_FIELDS, "uid_message")
    content = require_fields(obj["content"], CONTENT_FIELDS, "content")
    if content["version"] != VERSION:
        raise InvalidMessage(f"content.version: must be {VERSION!r}")
    if content["chainlink"] is not None:
        raise InvalidMessage("content.chainlink: must be null in version 1")
    preferences = content["preferences"]
    server = None
    if isinstance(preferences, dict) and "server" in preferences:
        preferences = dict(preferences)
        server = parse_server_preferences(preferences.pop("server"))
    require_fields(preferences, {"forwardsec", "ciphersuites"}, "content.preferences")
    if preferences["forwardsec"] not in FORWARDSEC:
        raise InvalidMessage(f"content.preferences.forwardsec: one of {', '.join(FORWARDSEC)}")
    pubkeys = _bounded_list(content["pubkeys"], MAX_PUBKEYS, "content.pubkeys")
    repouris = _str_list(content["repouris"], MAX_REPOURIS, "content.repouris")
    ciphersuites = _str_list(preferences["ciphersuites"], MAX_CIPHERSUITES,
                             "content.preferences.ciphersuites", MAX_CIPHERSUITE_LENGTH)
    sigkey = parse_key_entry(content["sigkey"], "content.sigkey", ED25519)
    sigescrow = (None if content["sigescrow"] is None
                 else parse_key_entry(content["sigescrow"], "content.sigescrow", ED25519))
    if sigescrow == sigkey:
        raise InvalidMessage("content.sigescrow: must differ from content.sigkey")
    return UIDMessage(
        raw=obj,
        identity=require_str(content["identity"], "content.identity"),
        msgcount=require_int(content["msgcount"], "content.msgcount"),
        not_before_ts=require_int(content["not_before_ts"], "content.not_before_ts"),
        not_after_ts=require_int(content["not_after_ts"], "content.not_after_ts"),
        sigkey=sigkey,
        sigescrow=sigescrow,
        pubkeys=tuple(parse_key_entry(key, f"content.pubkeys[{i}]", X25519)
                      for i, key in enumerate(pubkeys)),
        mixaddress=require_str(content["mixaddress"], "content.mixaddress"),
        nymaddress=b64decode(content["nymaddress"], "content.nymaddress", allow_empty=True),
        repouris=repouris,
        forwardsec=preferences["forwardsec"],
        ciphersuites=ciphersuites,
        server=server,
        lastentry=b64decode(content["lastentry"], "content.lastentry", length=32),
        selfsignature=_signature(obj["selfsignature"], "selfsignature", False),
        usersignature=_signature(obj["usersignature"], "usersignature", True),
        escrowsignature=_signature(obj["escrowsignature"], "escrowsignature", True),
    )


def build_uid_content(
    identity: str,
    sigkey: KeyEntry,
    *,
    msgcount: int,
    not_before_ts: int,
    not_after_ts: int,
    lastentry: bytes,
    sigescrow: KeyEntry | None = None,
    pubkeys: Iterable[KeyEntry] = (),
    repouris: Iterable[str] = (),
    forwardsec: str = "strict",
    ciphersuites: Iterable[str] = (),
    mixaddress: str = "",
    nymaddress: bytes = b"",
    server: ServerPreferences | None = None,
) -> dict:
    """A UIDContent with every field present, as §4 requires; ``server`` only for
    the server's own messages."""
    preferences: dict = {"forwardsec": forwardsec, "ciphersuites": list(ciphersuites)}
    if server is not None:
        preferences["server"] = format_server_preferences(server)
    return {
        "version": VERSION,
        "identity": identity,
        "msgcount": msgcount,
        "not_before_ts": not_before_ts,
        "not_after_ts": not_after_ts,
        "sigkey": sigkey.to_json(),
        "sigescrow": sigescrow.to_json() if sigescrow else None,
        "pubkeys": [key.to_json() for key in pubkeys],
        "mixaddress": mixaddress,
        "nymaddress": b64encode(nymaddress),
        "repouris": list(repouris),
        "preferences": preferences,
        "lastentry": b64encode(lastentry),
        "chainlink": None,
    }


def sign_uid_content(
    content: dict,
    sigkey: nacl.signing.SigningKey,
    *,
    previous_sigkey: nacl.signing.SigningKey | None = None,
    escrow_key: nacl.signing.SigningKey | None = None,
) -> dict:
    """Sign ``content`` into a UIDMessage.

    ``previous_sigkey`` signs an update (usersignature); ``escrow_key`` proves
    possession of the escrow key on create, or authorizes a recovery on update.
    """
    assert content["sigkey"] == ed25519_entry(sigkey).to_json(), "content.sigkey must be sigkey"
    data = canonical_json(content)

    def signature(key: nacl.signing.SigningKey | None) -> str:
        return b64encode(sign_detached(key, data)) if key is not None else ""

    return {
        "content": content,
        "selfsignature": signature(sigkey),
        "usersignature": signature(previous_sigkey),
        "escrowsignature": signature(escrow_key),
    }


_KEEP: Any = object()


def update_uid_content(previous: UIDMessage, sigkey: KeyEntry, *, not_before_ts: int,
                       not_after_ts: int, lastentry: bytes, sigescrow: KeyEntry | None = _KEEP,
                       pubkeys: Iterable[KeyEntry] | None = None,
                       repouris: Iterable[str] | None = None,
                       server: ServerPreferences | None = None) -> dict:
    """The content of the next message of an identity (msgcount + 1): a new validity
    and lastentry, optionally new keys or (the server's own) preferences.server;
    everything else carried over."""
    return build_uid_content(
        previous.identity, sigkey, msgcount=previous.msgcount + 1,
        not_before_ts=not_before_ts, not_after_ts=not_after_ts, lastentry=lastentry,
        sigescrow=previous.sigescrow if sigescrow is _KEEP else sigescrow,
        pubkeys=previous.pubkeys if pubkeys is None else pubkeys,
        repouris=previous.repouris if repouris is None else repouris,
        forwardsec=previous.forwardsec, ciphersuites=previous.ciphersuites,
        mixaddress=previous.mixaddress, nymaddress=previous.nymaddress,
        server=previous.server if server is None else server,
    )


def uid_hash(message: dict) -> bytes:
    """UIDHash = SHA256(canonical(UIDMessage)); the key that opens its stored form."""
    return sha256(canonical_json(message))


def seal(data: bytes, key: bytes, nonce: bytes | None = None) -> bytes:
    """SHA256(key) || nonce || crypto_secretbox(data): UIDMessageEncrypted's layout (§5)."""
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    return sha256(key) + nonce + nacl.bindings.crypto_secretbox(data, nonce, key)


def encrypt_uid_message(message: dict) -> tuple[bytes, bytes]:
    """Return ``(UIDHash, UIDMessageEncrypted)``; only who knows UIDHash can open it."""
    data = canonical_json(message)
    key = sha256(data)
    return key, seal(data, key)


def decrypt_uid_message(encrypted: bytes, key: bytes) -> dict:
    """Open UIDMessageEncrypted with its UIDHash and check that the plaintext hashes
    to it (§7.3); anything else is a ``VerificationError``."""
    if len(encrypted) < 32 + NONCE_SIZE + 16 or encrypted[:32] != sha256(key):
        raise VerificationError("encrypted UIDMessage does not belong to this UIDHash")
    try:
        data = nacl.bindings.crypto_secretbox_open(encrypted[56:], encrypted[32:56], key)
        message = json.loads(data)
    except (nacl.exceptions.CryptoError, ValueError):
        raise VerificationError("encrypted UIDMessage does not open") from None
    if not isinstance(message, dict) or sha256(canonical_json(message)) != key:
        raise VerificationError("UIDMessage does not hash to its UIDHash")
    return message

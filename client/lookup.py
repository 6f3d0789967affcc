"""Looking up an identity on a verified local chain (§7.3, §11.3).

For every entry of the identity: fetch its UIDMessageReply by UIDIndex, check it
names this entry and position, check the server's signature with the key the
chain says was the server's at that position, open the message with the UIDHash
the entry gave, and finally check the whole create/update sequence (§4 rules at
each reply's ``entry.ts``). The server's own keys are found the same way, on
``keyserver@<server_name>``'s entries.
"""

from __future__ import annotations

from dataclasses import dataclass

from .api import KeyserverAPI
from .protocol.encoding import b64url_encode, sha256
from .protocol.errors import ProtocolError, VerificationError
from .protocol.identity import server_identity
from .localchain import LocalChain
from .protocol.signedjson import signature_key_ids, verify_signed_json
from .protocol.uidmessage import UIDMessage, decrypt_uid_message, parse_uid_message
from .protocol.uidrules import Latest, Limits, is_current, verify_sequence
from .protocol.wire import UIDMessageReply

#: How long after a rotation replies by the previous key stay acceptable (§11.2).
ROTATION_OVERLAP_MS = 3600 * 1000


@dataclass(frozen=True)
class Found:
    """One verified message of an identity, where the chain holds it, and the
    server's signed reply that vouches for it."""

    pos: int
    ts: int
    message: UIDMessage
    reply: UIDMessageReply


@dataclass(frozen=True)
class LookupResult:
    identity: str
    history: tuple[Found, ...]
    latest: Latest

    @property
    def message(self) -> UIDMessage:
        return self.history[-1].message

    def is_current(self, now_ms: int) -> bool:
        return is_current(self.latest, now_ms)


@dataclass(frozen=True)
class ServerKey:
    """A server signing key and the chain position and time it took over."""

    pos: int
    ts: int
    pubkey: bytes


def _fetch_reply(api: KeyserverAPI, chain: LocalChain, pos: int,
                 uid_hash: bytes) -> UIDMessageReply:
    reply = api.fetch_uid(b64url_encode(sha256(uid_hash)),
                          what=f"the reply for position {pos} is malformed")
    if reply.entry.hashchain_entry != chain.entry(pos) or reply.entry.hashchain_pos != pos:
        raise VerificationError(f"the reply for position {pos} names another entry")
    return reply


def _open(reply: UIDMessageReply, uid_hash: bytes, identity: str, pos: int) -> UIDMessage:
    try:
        message = parse_uid_message(decrypt_uid_message(reply.entry.uid_message_encrypted,
                                                        uid_hash))
    except ProtocolError as exc:
        raise VerificationError(f"the message at position {pos} is malformed: {exc}") from None
    if message.identity != identity:
        raise VerificationError(f"the message at position {pos} is for {message.identity}")
    return message


def check_server_signature(obj: dict, ts: int, server_name: str, keys: list[ServerKey],
                           pos: int, what: str) -> None:
    """§11.3 against the chain, for a signed object carrying ``ts`` (a reply, a
    receipt): the key of the last server entry at or before ``pos``, or the one
    before it while ``ts`` is within the rotation overlap."""
    before = [key for key in keys if key.pos <= pos]
    if not before:
        raise VerificationError(f"no server key on the chain before position {pos}")
    allowed = [before[-1].pubkey]
    if len(before) > 1 and ts < before[-1].ts + ROTATION_OVERLAP_MS:
        allowed.append(before[-2].pubkey)
    for key_id in signature_key_ids(obj, server_name):
        for pubkey in allowed:
            try:
                verify_signed_json(obj, server_name, key_id, pubkey)
                return
            except ProtocolError:
                continue
    raise VerificationError(f"{what} is not signed by the server key valid at position {pos}")


def check_reply_signature(reply: UIDMessageReply, server_name: str, keys: list[ServerKey],
                          pos: int) -> None:
    """A UIDMessageReply at ``pos``, signed at its ``entry.ts``."""
    check_server_signature(reply.raw, reply.entry.ts, server_name, keys, pos,
                           f"the reply for position {pos}")


def server_keys(api: KeyserverAPI, chain: LocalChain, server_name: str,
                limits: Limits) -> list[ServerKey]:
    """The server's signing keys as its own entries on the chain record them (§7.2)."""
    own = server_identity(server_name)
    keys: list[ServerKey] = []
    messages = []
    for pos, uid_hash in chain.search(own):
        reply = _fetch_reply(api, chain, pos, uid_hash)
        message = _open(reply, uid_hash, own, pos)
        # A server entry's own reply may be signed by the key it installs (entry 0
        # always is) or, within the overlap, by the key it replaces.
        keys = keys + [ServerKey(pos, reply.entry.ts, message.sigkey.pubkey)]
        check_reply_signature(reply, server_name, keys, pos)
        messages.append((message, reply.entry.ts))
    if not keys or keys[0].pos != 0:
        raise VerificationError(f"the chain does not start with {own}")
    verify_sequence(messages, limits)
    return keys


def lookup(api: KeyserverAPI, chain: LocalChain, server_name: str, identity: str,
           limits: Limits, keys: list[ServerKey] | None = None) -> LookupResult | None:
    """The identity's verified history and current keys, or None if not on the chain.

    ``keys`` are the server's keys for the whole chain, if the caller has them
    from ``server_keys`` already."""
    if keys is None:
        # One pass over the chain finds both (the server's own entries give its keys).
        chain.search_many([server_identity(server_name), identity])
        keys = server_keys(api, chain, server_name, limits)
    history = []
    for pos, uid_hash in chain.search(identity):
        reply = _fetch_reply(api, chain, pos, uid_hash)
        check_reply_signature(reply, server_name, keys, pos)
        history.append(Found(pos, reply.entry.ts, _open(reply, uid_hash, identity, pos), reply))
    if not history:
        return None
    latest = verify_sequence([(found.message, found.ts) for found in history], limits)
    return LookupResult(identity, tuple(history), latest)

"""The server's signing keys as the client tracks them on the chain (§7.2, §11.2,
§11.3), and whose signature counts for which signed object. No I/O: the keys
come from ``trust.history.verify_server_keys``.

Capabilities are checked twice in a session's life, both here: when they arrive,
against a key they list themselves (all a client can check of a server it does
not know yet: the name must not be taken over silently, ``server add``), and once
the chain is synced, against the key the chain says was the server's (§11.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from ..protocol.errors import ProtocolError, VerificationError
from ..protocol.signedjson import signature_key_ids, verify_signed_json
from ..protocol.wire import Capabilities, UIDMessageReply, reply_signing_bytes

#: How long after a rotation replies by the previous key stay acceptable (§11.2).
ROTATION_OVERLAP_MS = 3600 * 1000


@dataclass(frozen=True)
class ServerKey:
    """A server signing key and the chain position and time it took over."""

    pos: int
    ts: int
    pubkey: bytes


def check_server_signature(obj: dict, ts: int, server_name: str, keys: Sequence[ServerKey],
                           pos: int, what: str, *, message: bytes | None = None) -> None:
    """§11.3 against the chain, for a signed object carrying ``ts`` (a reply, a
    receipt, capabilities): the key of the last server entry at or before ``pos``,
    or the one before it while ``ts`` is within the rotation overlap. ``message`` is
    the object's signing bytes, if the caller has them already."""
    before = [key for key in keys if key.pos <= pos]
    if not before:
        raise VerificationError(f"no server key on the chain before position {pos}")
    allowed = [before[-1].pubkey]
    if len(before) > 1 and ts < before[-1].ts + ROTATION_OVERLAP_MS:
        allowed.append(before[-2].pubkey)
    for key_id in signature_key_ids(obj, server_name):
        for pubkey in allowed:
            try:
                verify_signed_json(obj, server_name, key_id, pubkey, message=message)
                return
            except ProtocolError:
                continue
    raise VerificationError(f"{what} is not signed by the server key valid at position {pos}")


def check_reply_signature(reply: UIDMessageReply, server_name: str, keys: Sequence[ServerKey],
                          pos: int) -> None:
    """A UIDMessageReply at ``pos``, signed at its ``entry.ts``."""
    check_server_signature(reply.raw, reply.entry.ts, server_name, keys, pos,
                           f"the reply for position {pos}", message=reply_signing_bytes(reply))


def check_reply_signatures(replies: Iterable[UIDMessageReply], server_name: str,
                           keys: Sequence[ServerKey]) -> None:
    """``check_reply_signature`` of each of ``replies`` (a fetched bundle's, say) at
    its own position."""
    for reply in replies:
        check_reply_signature(reply, server_name, keys, reply.entry.hashchain_pos)


def check_self_signed(capabilities: Capabilities) -> None:
    """Capabilities signed by a key they publish: whether that key is really the
    server's is for the chain (``check_capabilities``) to tell."""
    name, raw = capabilities.server_name, capabilities.raw
    for key_id in signature_key_ids(raw, name):
        if key_id in capabilities.sigpubkeys:
            verify_signed_json(raw, name, key_id, capabilities.sigpubkeys[key_id])
            return
    raise VerificationError(f"capabilities of {name} are not signed by a key they list")


def check_capabilities(capabilities: Capabilities, server_name: str, keys: Sequence[ServerKey],
                       head_pos: int) -> None:
    """The limits, prices, URIs and token keys the client acts on are the server's
    signed word (§11.3): signed by the key the chain holds at its head."""
    check_server_signature(capabilities.raw, capabilities.ts, server_name, keys, head_pos,
                           "the capabilities document")

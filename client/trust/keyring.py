"""The server's signing keys as the client tracks them on the chain (§7.2, §11.2,
§11.3), and whose signature counts for which signed object. No I/O: the keys
come from ``trust.history.verify_server_keys``, and whether a key was valid at an
object's time is the ``KeyValidity``'s to say (``client.keyring.Keyring`` asks the
server's key documents, judged by ``trust.keydocs``).

A server signature on an object carrying ``ts`` (§11.3) counts when two things
hold: the chain gives the key the object's position (the sigkey of the last
``keyserver@`` entry at or before it, or the previous *distinct* sigkey: a renewal
repeats the key, a rotation changes it), and a key document says the key was
valid at ``ts`` (for the previous key this bounds the overlap: a document that
gives it an ``expired_ts`` ends it there).

Capabilities are checked twice in a session's life, both here: when they arrive,
against a key they list themselves (all a client can check of a server it does
not know yet: the name must not be taken over silently, ``server add``), and once
the chain is synced, against the key the chain says was the server's (§11.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

from ..protocol.errors import ProtocolError, VerificationError
from ..protocol.signedjson import signature_key_ids, verify_signed_json
from ..protocol.wire import Capabilities, UIDMessageReply, reply_signing_bytes

@dataclass(frozen=True)
class ServerKey:
    """A server signing key and the chain position and time it took over."""

    pos: int
    ts: int
    pubkey: bytes


class KeyValidity(Protocol):
    """Whether a server key was valid when an object was signed (§11.3)."""

    def check_valid(self, pubkey: bytes, ts: int, keys: Sequence[ServerKey], previous: bool,
                    what: str) -> None:
        """Raise ``VerificationError`` unless ``pubkey`` was valid at ``ts``; ``keys``
        are the chain's (every key of a document must be one), ``previous`` says the
        key signs under the overlap rule."""


def signers_at(keys: Sequence[ServerKey], pos: int) -> tuple[bytes, bytes | None]:
    """The key the chain gives position ``pos`` and the previous distinct one (None
    before the first rotation): renewals repeat a key, so the one before the last
    entry is not necessarily another key (§11.3)."""
    before = [key.pubkey for key in keys if key.pos <= pos]
    if not before:
        raise VerificationError(f"no server key on the chain before position {pos}")
    current = before[-1]
    previous = next((key for key in reversed(before) if key != current), None)
    return current, previous


def check_server_signature(obj: dict, ts: int, server_name: str, keys: Sequence[ServerKey],
                           pos: int, what: str, validity: KeyValidity, *,
                           message: bytes | None = None) -> None:
    """§11.3 for a signed object carrying ``ts`` (a reply, a receipt, capabilities)
    at chain position ``pos``: signed by the key the chain gives ``pos``, or by the
    previous distinct one, and that key valid at ``ts`` as ``validity`` says.
    ``message`` is the object's signing bytes, if the caller has them already."""
    current, previous = signers_at(keys, pos)
    candidates = [(current, False)] + ([(previous, True)] if previous is not None else [])
    for key_id in signature_key_ids(obj, server_name):
        for pubkey, is_previous in candidates:
            try:
                verify_signed_json(obj, server_name, key_id, pubkey, message=message)
            except ProtocolError:
                continue
            validity.check_valid(pubkey, ts, keys, is_previous, what)
            return
    raise VerificationError(f"{what} is not signed by the server key valid at position {pos}")


def check_reply_signature(reply: UIDMessageReply, server_name: str, keys: Sequence[ServerKey],
                          pos: int, validity: KeyValidity) -> None:
    """A UIDMessageReply at ``pos``, signed at its ``entry.ts``."""
    check_server_signature(reply.raw, reply.entry.ts, server_name, keys, pos,
                           f"the reply for position {pos}", validity,
                           message=reply_signing_bytes(reply))


def check_reply_signatures(replies: Iterable[UIDMessageReply], server_name: str,
                           keys: Sequence[ServerKey], validity: KeyValidity) -> None:
    """``check_reply_signature`` of each of ``replies`` (a fetched bundle's, say) at
    its own position."""
    for reply in replies:
        check_reply_signature(reply, server_name, keys, reply.entry.hashchain_pos, validity)


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
                       head_pos: int, validity: KeyValidity) -> None:
    """The limits, prices, URIs and token keys the client acts on are the server's
    signed word (§11.3): signed by the key the chain holds at its head."""
    check_server_signature(capabilities.raw, capabilities.ts, server_name, keys, head_pos,
                           "the capabilities document", validity)


def check_reply_listed(reply: UIDMessageReply, capabilities: Capabilities) -> None:
    """Without a synced chain (``lookup --light``): the reply is signed by a key the
    server's self-signed capabilities list. Weaker than ``check_reply_signature``:
    nothing says that key was the server's at the reply's position (§11.3)."""
    name, pos = capabilities.server_name, reply.entry.hashchain_pos
    for key_id in signature_key_ids(reply.raw, name):
        if key_id in capabilities.sigpubkeys:
            verify_signed_json(reply.raw, name, key_id, capabilities.sigpubkeys[key_id],
                               message=reply_signing_bytes(reply))
            return
    raise VerificationError(f"the reply for position {pos} is not signed by a key the "
                            "server's capabilities list")

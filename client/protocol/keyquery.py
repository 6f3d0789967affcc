"""Asking a notary for a server's keys (§11.4): the query body, and the notary's
answer opened with the notary's own key. Pure: the caller moves the bytes.

The answer is ``{"server_keys": [<key document>, ...]}``; each document carries the
origin's self-signatures and the notary's signature under its own server name. A
document counts only with the notary's signature by the key the client was told to
trust (``Notary``): a notary is trusted for what it saw, and only its signature
says what that was. The documents themselves go through the one
``parse_key_document`` of every path (origin's self-signatures, shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .errors import ProtocolError, VerificationError
from .identity import check_server_name
from .serverkeys import KeyDocument, parse_key_document
from .signedjson import KEY_ID, verify_signed_json

#: At most this many documents in a notary's answer (one server asked; Matrix
#: notaries may send a few versions).
MAX_ANSWER_DOCUMENTS = 16


@dataclass(frozen=True)
class Notary:
    """A notary the user trusts: its server name, base URL and signing key."""

    server_name: str
    url: str
    key_id: str
    pubkey: bytes

    def __post_init__(self):
        check_server_name(self.server_name)
        if not KEY_ID.fullmatch(self.key_id):
            raise ProtocolError(f"{self.key_id!r} is not an ed25519 key id")
        if len(self.pubkey) != 32:
            raise ProtocolError("a notary key is 32 bytes")


def format_key_query(server_name: str, key_ids: Iterable[str],
                     minimum_valid_until_ts: int) -> dict:
    """``POST /_matrix/key/v2/query``'s body: these key ids of ``server_name`` (all
    of its keys when none), valid at least until ``minimum_valid_until_ts``."""
    return {"server_keys": {server_name: {
        key_id: {"minimum_valid_until_ts": minimum_valid_until_ts} for key_id in key_ids}}}


def parse_notary_answer(obj: Any, server_name: str, notary: Notary) -> list[KeyDocument]:
    """The documents of ``server_name`` in ``notary``'s answer, each signed by the
    notary and by its own keys; documents of other servers are ignored. One that
    the notary did not sign, or that does not parse, fails the whole answer: the
    notary vouches for all it sends."""
    documents = obj.get("server_keys") if isinstance(obj, dict) else None
    if not isinstance(documents, list) or len(documents) > MAX_ANSWER_DOCUMENTS:
        raise VerificationError(f"notary {notary.server_name}: the answer must hold a list "
                                f"server_keys of at most {MAX_ANSWER_DOCUMENTS} documents")
    parsed = []
    for document in documents:
        if not isinstance(document, dict) or document.get("server_name") != server_name:
            continue
        try:
            verify_signed_json(document, notary.server_name, notary.key_id, notary.pubkey)
        except ProtocolError as exc:
            raise VerificationError(f"notary {notary.server_name} did not sign the key "
                                    f"document of {server_name} it sent: {exc}") from None
        parsed.append(parse_key_document(document, server_name))
    return parsed

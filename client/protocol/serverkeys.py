"""Server signing keys as a key document (§11.1, Matrix's server-key format) and the
rule that a key's signature counts only while the key was valid (§11.3, MSC2076).

``parse_key_document`` checks shape and the origin's self-signatures (by every key
in ``verify_keys``); ``valid_at`` says whether a document vouches for a key at a
time. Pure: callers fetch and cache documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import nacl.signing

from .encoding import MAX_INT, b64decode, b64encode
from .errors import ProtocolError, VerificationError
from .identity import check_server_name
from .signedjson import KEY_ID, sign_json, verify_signed_json

#: At most this many keys in ``verify_keys`` (§11.2: never more than two).
MAX_VERIFY_KEYS = 2


@dataclass(frozen=True)
class KeyDocument:
    """A server's key document: its current keys (valid until ``valid_until_ts``) and
    its old keys, each with the time it expired. ``raw`` is the signed JSON as sent."""

    server_name: str
    verify_keys: Mapping[str, bytes]
    old_verify_keys: Mapping[str, tuple[bytes, int]]
    valid_until_ts: int
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def pubkeys(self) -> set[bytes]:
        """Every key the document names, current or old."""
        return set(self.verify_keys.values()) | {key for key, _ in
                                                 self.old_verify_keys.values()}


def format_key_document(server_name: str, verify_keys: Mapping[str, bytes],
                        old_verify_keys: Mapping[str, tuple[bytes, int]],
                        valid_until_ts: int) -> dict:
    """The unsigned document (the server signs it with every current key)."""
    return {
        "server_name": server_name,
        "verify_keys": {key_id: {"key": b64encode(key)} for key_id, key in verify_keys.items()},
        "old_verify_keys": {key_id: {"key": b64encode(key), "expired_ts": expired_ts}
                            for key_id, (key, expired_ts) in old_verify_keys.items()},
        "valid_until_ts": valid_until_ts,
    }


def sign_key_document(document: dict, server_name: str,
                      keys: Mapping[str, nacl.signing.SigningKey]) -> dict:
    """``document`` signed by every key of ``keys`` (those in its ``verify_keys``)."""
    for key_id, signing_key in keys.items():
        document = sign_json(document, server_name, key_id, signing_key)
    return document


def _fail(what: str) -> VerificationError:
    return VerificationError(f"malformed key document: {what}")


def _key(value: Any, what: str) -> bytes:
    if not isinstance(value, dict) or not isinstance(value.get("key"), str):
        raise _fail(f"{what}: expected {{\"key\": base64}}")
    try:
        return b64decode(value["key"], what, length=32, error=VerificationError)
    except VerificationError as exc:
        raise _fail(str(exc)) from None


def _ms(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise _fail(f"{what}: must be an integer in [0, 2^53-1]")
    return value


def _key_map(value: Any, what: str) -> dict:
    if not isinstance(value, dict) or not all(isinstance(k, str) and KEY_ID.fullmatch(k)
                                              for k in value):
        raise _fail(f"{what}: must map ed25519 key ids")
    return value


def parse_key_document(obj: Any, server_name: str | None = None) -> KeyDocument:
    """A key document whose shape holds and which every key in its ``verify_keys``
    signed (§11.1); ``server_name`` if given must be the one it names. Unknown members
    are tolerated (a Matrix homeserver's document is one)."""
    if not isinstance(obj, dict):
        raise _fail("not a JSON object")
    name = obj.get("server_name")
    if not isinstance(name, str):
        raise _fail("server_name: must be a string")
    try:
        check_server_name(name)
    except ProtocolError:
        raise _fail(f"server_name {name!r} is not a server name") from None
    if server_name is not None and name != server_name:
        raise VerificationError(f"the key document is for {name}, not {server_name}")
    verify_keys = {key_id: _key(value, f"verify_keys {key_id}")
                   for key_id, value in _key_map(obj.get("verify_keys"), "verify_keys").items()}
    if not 1 <= len(verify_keys) <= MAX_VERIFY_KEYS:
        raise _fail(f"verify_keys: 1 to {MAX_VERIFY_KEYS} keys, not {len(verify_keys)}")
    old = {}
    for key_id, value in _key_map(obj.get("old_verify_keys", {}), "old_verify_keys").items():
        expired_ts = value.get("expired_ts") if isinstance(value, dict) else None
        old[key_id] = (_key(value, f"old_verify_keys {key_id}"),
                       _ms(expired_ts, f"old_verify_keys {key_id} expired_ts"))
    document = KeyDocument(name, verify_keys, old,
                           _ms(obj.get("valid_until_ts"), "valid_until_ts"), obj)
    for key_id, pubkey in verify_keys.items():
        try:
            verify_signed_json(obj, name, key_id, pubkey)
        except ProtocolError as exc:
            raise VerificationError(f"the key document of {name} is not signed by its own "
                                    f"key {key_id}: {exc}") from None
    return document

"""Signed JSON, Matrix convention (§1): signatures over the canonical JSON of the
object without its ``signatures`` and ``unsigned`` members.

Interoperates with the ``signedjson`` library; kept here so the server and the
client share one small implementation with the protocol's error types.
"""

from __future__ import annotations

import re
from typing import Any

import nacl.signing

from .encoding import b64decode, b64encode, canonical_json
from .errors import InvalidSignature
from .keys import sign_detached, verify_detached

KEY_ID = re.compile(r"^ed25519:[A-Za-z0-9_]+$")


def signing_bytes(obj: dict) -> bytes:
    return canonical_json({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})


def sign_json(obj: dict, signer: str, key_id: str,
              signing_key: nacl.signing.SigningKey) -> dict:
    """Return a copy of ``obj`` with one more signature by ``signer``/``key_id``."""
    if not KEY_ID.fullmatch(key_id):
        raise ValueError(f"bad key id {key_id!r}")
    signature = b64encode(sign_detached(signing_key, signing_bytes(obj)))
    signed = dict(obj)
    signatures = {name: dict(sigs) for name, sigs in obj.get("signatures", {}).items()}
    signatures.setdefault(signer, {})[key_id] = signature
    signed["signatures"] = signatures
    return signed


def signature_key_ids(obj: Any, signer: str) -> list[str]:
    """The key ids ``signer`` claims to have signed ``obj`` with."""
    signatures = obj.get("signatures") if isinstance(obj, dict) else None
    by_signer = signatures.get(signer) if isinstance(signatures, dict) else None
    if not isinstance(by_signer, dict):
        return []
    return [key_id for key_id in by_signer if isinstance(key_id, str) and KEY_ID.fullmatch(key_id)]


def verify_signed_json(obj: Any, signer: str, key_id: str, pubkey: bytes, *,
                       message: bytes | None = None) -> None:
    """Raise ``InvalidSignature`` unless ``obj`` carries a valid signature by that key;
    ``message`` is ``signing_bytes(obj)`` if the caller has it already."""
    if key_id not in signature_key_ids(obj, signer):
        raise InvalidSignature(f"not signed by {signer} with {key_id}")
    signature = b64decode(obj["signatures"][signer][key_id], f"signature {key_id}",
                          length=64, error=InvalidSignature)
    if not verify_detached(pubkey, signing_bytes(obj) if message is None else message,
                           signature):
        raise InvalidSignature(f"bad signature by {signer} with {key_id}")

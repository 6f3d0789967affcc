"""Byte-level conventions of the protocol (§1): canonical JSON, base64, strict JSON.

Everything that is signed or hashed goes through ``canonical_json``, and every
binary field goes through ``b64decode`` with its exact length, so that one
value has exactly one accepted encoding.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import re
from typing import Any

from .errors import BadRequest, InvalidMessage

#: Largest integer a JSON number may carry in this protocol (§1).
MAX_INT = 2**53 - 1

_B64_STD = re.compile(r"^[A-Za-z0-9+/]*$")
_B64_URL = re.compile(r"^[A-Za-z0-9_-]*$")


def format_ms(ts: int) -> str:
    """A protocol time (ms since the epoch) for people to read, in UTC."""
    return datetime.datetime.fromtimestamp(ts / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def canonical_json(obj: Any) -> bytes:
    """Matrix canonical JSON: sorted keys, no whitespace, UTF-8, no floats."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def b64encode(data: bytes) -> str:
    """Standard alphabet, unpadded."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def b64url_encode(data: bytes) -> str:
    """URL-safe alphabet, unpadded (path parameters, tokens, challenges)."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


#: Digits that are not in base32 (RFC 4648), read as the letters they look like.
_BASE32_LOOKALIKES = str.maketrans({"0": "O", "1": "I", "8": "B"})


def typed_base32(text: str) -> str:
    """Base32 as a person typed it from paper (an escrow backup, a voucher receipt):
    case, spaces and dashes do not matter, and the digits 0, 1 and 8, which base32
    never uses, are read as the letters O, I and B they are mistaken for."""
    return re.sub(r"[\s-]", "", text).upper().translate(_BASE32_LOOKALIKES)


def _decode(value: Any, alphabet: re.Pattern, decoder, encoder, what: str,
            length: int | None, allow_empty: bool, error: type) -> bytes:
    if not isinstance(value, str) or not alphabet.fullmatch(value) or len(value) % 4 == 1:
        raise error(f"{what}: not unpadded base64")
    if value == "":
        if allow_empty:
            return b""
        raise error(f"{what}: must not be empty")
    try:
        data = decoder(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise error(f"{what}: not unpadded base64") from None
    if encoder(data) != value:
        raise error(f"{what}: non-canonical base64")
    if length is not None and len(data) != length:
        raise error(f"{what}: must encode {length} bytes, not {len(data)}")
    return data


def b64decode(value: Any, what: str = "value", *, length: int | None = None,
              allow_empty: bool = False, error: type = InvalidMessage) -> bytes:
    """Decode unpadded, canonical standard base64 of an exact length, else ``error``."""
    return _decode(value, _B64_STD, base64.b64decode, b64encode, what, length, allow_empty, error)


def b64url_decode(value: Any, what: str = "value", *, length: int | None = None,
                  error: type = BadRequest) -> bytes:
    """Decode unpadded, canonical base64url (paths, tokens), else ``error``."""
    return _decode(value, _B64_URL, base64.urlsafe_b64decode, b64url_encode, what,
                   length, False, error)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise BadRequest("JSON object has a duplicate key")
    return obj


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not JSON")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_strings(value: Any) -> None:
    """Reject lone surrogates, which ``json`` lets through from ``\\ud800`` escapes."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("JSON string is not valid Unicode") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def parse_json_object(body: bytes) -> dict:
    """Parse a request body strictly (§1): UTF-8, one JSON object, no duplicate keys.

    Unparseable input is ``BadRequest``. Floats are kept as floats so that the
    shape checks reject them as ``InvalidMessage`` (parseable but wrong).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8") from None
    try:
        obj = json.loads(text, object_pairs_hook=_reject_duplicates,
                         parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers beyond Python's 4,300 digits
        raise BadRequest(f"request body is not JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(text):  # only escapes can make surrogates: walk rarely
        _check_strings(obj)
    if not isinstance(obj, dict):
        raise BadRequest("request body must be a JSON object")
    return obj


def require_int(value: Any, what: str, *, minimum: int = 0, error: type = InvalidMessage) -> int:
    """A JSON integer in ``[minimum, 2^53-1]``; not a bool, not ``1.0``."""
    if type(value) is not int or not minimum <= value <= MAX_INT:
        raise error(f"{what}: must be an integer in [{minimum}, 2^53-1]")
    return value


def require_str(value: Any, what: str, *, error: type = InvalidMessage) -> str:
    if not isinstance(value, str):
        raise error(f"{what}: must be a string")
    return value


def require_fields(obj: Any, fields: set[str] | frozenset[str], what: str,
                   *, error: type = InvalidMessage) -> dict:
    """An object with exactly these members: none missing, none unknown."""
    if not isinstance(obj, dict):
        raise error(f"{what}: must be a JSON object")
    missing = fields - obj.keys()
    if missing:
        raise error(f"{what}: missing {', '.join(sorted(missing))}")
    unknown = obj.keys() - fields
    if unknown:
        raise error(f"{what}: unknown {', '.join(sorted(unknown))}")
    return obj

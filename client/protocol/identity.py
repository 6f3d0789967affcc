"""Identities (pseudonyms) and server names (§2).

Normalization folds look-alike characters in the localpart (``1``→``l``,
``0``→``o``, ``j``→``i``) so that two pseudonyms that read the same are the
same pseudonym. Clients normalize user input; the server only accepts the
normalized form.
"""

from __future__ import annotations

import re

from .errors import InvalidIdentity

MAX_IDENTITY_LENGTH = 254

_LOCALPART = re.compile(r"^[a-z2-9](?:[a-z2-9.-]{0,62}[a-z2-9])?$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_FOLD = str.maketrans({"1": "l", "0": "o", "j": "i"})


def is_domain(name: str) -> bool:
    """A lowercase DNS name: labels ``[a-z0-9-]{1,63}``, no leading/trailing ``-``."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_IDENTITY_LENGTH
        and all(_LABEL.fullmatch(label) for label in name.split("."))
    )


def _check(localpart: str, domain: str, original: str) -> None:
    if not _LOCALPART.fullmatch(localpart) or ".." in localpart:
        raise InvalidIdentity(
            f"{original!r}: the part before @ must be 1-64 characters of a-z, 2-9, '.' "
            "and '-', starting and ending with a letter or digit, without '..'"
        )
    if not is_domain(domain):
        raise InvalidIdentity(f"{original!r}: {domain!r} is not a valid domain name")
    if len(localpart) + 1 + len(domain) > MAX_IDENTITY_LENGTH:
        raise InvalidIdentity(f"{original!r}: longer than {MAX_IDENTITY_LENGTH} characters")


def normalize_identity(text: str) -> str:
    """Turn user input into the normalized identity, or raise ``InvalidIdentity``."""
    if not isinstance(text, str) or not text.isascii():
        raise InvalidIdentity(f"{text!r}: identities are ASCII only")
    lowered = text.lower()
    if lowered.count("@") != 1:
        raise InvalidIdentity(f"{text!r}: an identity is localpart@domain with exactly one @")
    localpart, domain = lowered.split("@")
    localpart = localpart.translate(_FOLD)
    _check(localpart, domain, text)
    return f"{localpart}@{domain}"


def parse_identity(identity: str) -> tuple[str, str]:
    """Split an identity that must already be normalized; else ``InvalidIdentity``."""
    if normalize_identity(identity) != identity:
        raise InvalidIdentity(
            f"{identity!r} is not normalized (expected {normalize_identity(identity)!r})"
        )
    localpart, domain = identity.split("@")
    return localpart, domain


def check_server_name(name: str) -> str:
    """A server name is a lowercase DNS name without a port (§2)."""
    if not is_domain(name):
        raise InvalidIdentity(f"{name!r} is not a valid server name (lowercase DNS name, no port)")
    if len(name) + len("keyserver@") > MAX_IDENTITY_LENGTH:
        raise InvalidIdentity(f"server name {name!r} is too long")
    return name


def server_identity(server_name: str) -> str:
    """The keyserver's own identity, whose chain entries carry its signing keys (§7.2)."""
    return f"keyserver@{check_server_name(server_name)}"

"""The paper backup of the escrow key (§13: the escrow private key "goes to paper
(printed/exported once)"): ``format_paper_backup`` prints it, ``parse_paper_backup``
reads a typed-in copy back, with a check group per line that catches typos.
"""

from __future__ import annotations

import base64
import hashlib
import re

import nacl.signing

from ..protocol.encoding import b64encode, typed_base32
from ..protocol.errors import ClientError, InvalidIdentity
from ..protocol.identity import normalize_identity, parse_identity


class BadBackup(ClientError):
    """A typed-in paper backup does not parse or fails its checksums."""


_BACKUP_HEADER = re.compile(r"keyclient\s+escrow\s+key\s+for\s+(\S+)", re.IGNORECASE)
_BACKUP_LINE = re.compile(r"^\s*(\d+)\s*[:.)]\s*(.*)$")
_BACKUP_PUBKEY = re.compile(r"^\s*public\s+key\b[^:]*:\s*(.*)$", re.IGNORECASE)
_BACKUP_CHECK_LABEL = b"keyclient escrow backup v1"
_BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
_GROUP = 4
_LINE_CHARS = 4 * _GROUP  # key characters per line
_CHECK_CHARS = 4  # 20 bits per line: a typo slips through once in a million
_SEED_CHARS = 52  # base32 of 32 bytes, without the "====" padding


def _line_check(number: int, chars: str) -> str:
    """The check group of one key line; it covers the line number, so swapped
    lines fail too."""
    digest = hashlib.sha256(_BACKUP_CHECK_LABEL + b"\0%d\0" % number + chars.encode()).digest()
    return base64.b32encode(digest).decode()[:_CHECK_CHARS]


def _groups(chars: str) -> str:
    return " ".join(chars[i:i + _GROUP] for i in range(0, len(chars), _GROUP))


def format_paper_backup(identity: str, escrow_key: nacl.signing.SigningKey) -> str:
    """A printable block holding the escrow key's seed in base32 groups of four,
    each line ending with its check group, and the public key (b64, as in the
    UIDMessage's ``sigescrow``) for the user to compare."""
    parse_identity(identity)
    chars = base64.b32encode(bytes(escrow_key)).decode().rstrip("=")
    lines = [
        f"KEYCLIENT ESCROW KEY for {identity}",
        "The recovery key (sigescrow) of this identity: it replaces a lost signing key.",
        f"Anyone who holds this paper can take over {identity}. Keep it offline and safe.",
        "To restore, type the numbered lines back (spaces and case do not matter);",
        "the last group of each line checks that line.",
        "",
    ]
    for start in range(0, _SEED_CHARS, _LINE_CHARS):
        number = start // _LINE_CHARS + 1
        part = chars[start:start + _LINE_CHARS]
        lines.append(f"{number}: {_groups(part):<19}  {_line_check(number, part)}")
    lines += ["", f"Public key (ed25519): {b64encode(bytes(escrow_key.verify_key))}", ""]
    return "\n".join(lines)


def _backup_lines(text: str) -> dict[int, str]:
    """The numbered key lines, whitespace and case removed, look-alikes mapped."""
    found: dict[int, str] = {}
    for line in text.splitlines():
        match = _BACKUP_LINE.match(line)
        if not match:
            continue
        number = int(match[1])
        if number in found:
            raise BadBackup(f"line {number} appears twice")
        found[number] = typed_base32(match[2])
    return found


def parse_paper_backup(text: str, identity: str | None = None
                       ) -> tuple[str, nacl.signing.SigningKey]:
    """Read a typed-in paper backup back into (identity, escrow key). Whitespace
    and case do not matter; any typo is ``BadBackup`` naming the line.

    The paper tells the user to type the numbered lines back: those alone are
    enough when ``identity`` is given (the whole paper, with its first line naming
    the identity, is read too)."""
    header = _BACKUP_HEADER.search(text)
    if header is None:
        if identity is None:
            raise BadBackup("the 'KEYCLIENT ESCROW KEY for <identity>' line is missing "
                            "(or name the identity, as 'keyclient recover IDENTITY' does)")
    else:
        try:
            identity = normalize_identity(header[1].lower())
        except InvalidIdentity as exc:
            raise BadBackup(f"the identity on the first line: {exc}") from None
    if not _backup_lines(text):
        raise BadBackup("no numbered key lines ('1: ...') found: type the numbered lines "
                        "of the paper")
    found = _backup_lines(text)
    count = -(-_SEED_CHARS // _LINE_CHARS)
    extra = sorted(set(found) - set(range(1, count + 1)))
    if extra:
        raise BadBackup(f"unexpected key line {extra[0]}: the key has lines 1 to {count}")
    chars = ""
    for number in range(1, count + 1):
        if number not in found:
            raise BadBackup(f"key line {number} is missing")
        line = found[number]
        bad = sorted(set(line) - _BASE32)
        if bad:
            raise BadBackup(f"line {number}: {''.join(bad)!r} cannot appear in a backup "
                            "(letters A-Z and digits 2-7 only)")
        expected = min(_LINE_CHARS, _SEED_CHARS - len(chars))
        if len(line) != expected + _CHECK_CHARS:
            raise BadBackup(f"line {number} has {len(line)} characters, expected "
                            f"{expected + _CHECK_CHARS} ({expected} key and {_CHECK_CHARS} check)")
        part, check = line[:expected], line[expected:]
        if _line_check(number, part) != check:
            raise BadBackup(f"line {number} does not match its check group: look for a typo")
        chars += part
    key = nacl.signing.SigningKey(base64.b32decode(chars + "=" * (-len(chars) % 8)))
    pubkey = next((m[1] for m in map(_BACKUP_PUBKEY.match, text.splitlines()) if m), None)
    if pubkey is not None and (re.sub(r"\s", "", pubkey).lower()
                               != b64encode(bytes(key.verify_key)).lower()):
        raise BadBackup("the public key line does not match the key lines: look for a typo")
    return identity, key

"""What a server's key documents say of its keys over time (§11.1, §11.3, §11.4),
decided without I/O: ``client.keyring`` fetches and caches the documents, this
module judges them.

* ``key_verdict``: whether a document vouches for a key signing at ``ts`` (VALID),
  denies it for good (EXPIRED: a key that had expired before ``ts`` is never
  accepted, whatever the signature), or cannot tell (UNKNOWN: the keyring asks a
  fresher source).
* ``check_document_keys``: every key a document names must be a sigkey of
  ``keyserver@<server_name>`` on the synced chain (§11.2), else the document is
  refused: the chain is what everyone sees, a document only what one client was
  shown.
* ``disagreement``: whether a notary reports other keys than the server itself
  (§11.4 corroboration).
"""

from __future__ import annotations

import enum
from typing import Iterable

from ..protocol.encoding import b64encode
from ..protocol.errors import VerificationError
from ..protocol.serverkeys import KeyDocument


class Verdict(enum.Enum):
    VALID = "valid"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


class KeyNotValid(VerificationError):
    """A server signature by a key that was not valid at the signed object's time."""


class KeyDocumentRefused(VerificationError):
    """A key document that names a key the chain never gave the server."""


class NotaryDisagreement(VerificationError):
    """A trusted notary reports other keys for a server than the server shows us
    (§11.4): one of them is lying, perhaps the server shows different people
    different keys. The message shows both documents."""


def key_verdict(document: KeyDocument | None, fetched_ts: int, pubkey: bytes, ts: int,
                previous: bool) -> Verdict:
    """What ``document`` (fetched at the client's ``fetched_ts``) says of ``pubkey``
    signing at ``ts`` (§11.3): VALID in ``verify_keys`` while ``ts <=
    valid_until_ts``, or in ``old_verify_keys`` while ``ts < expired_ts``; EXPIRED
    in ``old_verify_keys`` from ``expired_ts`` on (final). Anything else is
    UNKNOWN: no document, one that does not cover ``ts``, or one that does not
    name the key (it may predate a rotation).

    ``previous``: the key is the chain's previous distinct key (the overlap of
    §11.3). A document listing it as current says so only up to when it was
    fetched: the overlap may have ended since, so an object dated later needs a
    fresher document (UNKNOWN) before the old key counts."""
    if document is None:
        return Verdict.UNKNOWN
    for old, expired_ts in document.old_verify_keys.values():
        if old == pubkey:
            return Verdict.VALID if ts < expired_ts else Verdict.EXPIRED
    if pubkey not in document.verify_keys.values() or ts > document.valid_until_ts:
        return Verdict.UNKNOWN
    if previous and ts > fetched_ts:
        return Verdict.UNKNOWN
    return Verdict.VALID


def check_document_keys(document: KeyDocument, chain_pubkeys: Iterable[bytes]) -> None:
    """Refuse a document naming a key that is no sigkey of ``keyserver@`` on the
    chain (§11.2)."""
    strangers = document.pubkeys - set(chain_pubkeys)
    if strangers:
        named = ", ".join(sorted(b64encode(key) for key in strangers))
        raise KeyDocumentRefused(
            f"the key document of {document.server_name} names keys that are no signing "
            f"key of keyserver@{document.server_name} on the chain: {named}")


def document_keys(document: KeyDocument) -> dict[str, bytes]:
    """Every key a document names, current or old, by key id."""
    return {**{key_id: key for key_id, (key, _) in document.old_verify_keys.items()},
            **document.verify_keys}


def disagreement(own: KeyDocument, notarized: KeyDocument) -> str | None:
    """Why a notary's document of a server contradicts the server's own, or None.

    Compared: every key each names, by key id, current or old. Which keys are still
    current may differ honestly (the notary fetched before an overlap ended); which
    keys exist may not: a key the notary never saw is one the server did not show it."""
    mine, theirs = document_keys(own), document_keys(notarized)
    if mine == theirs:
        return None
    parts = []
    if set(mine) - set(theirs):
        parts.append(f"the notary does not know {', '.join(sorted(set(mine) - set(theirs)))}")
    if set(theirs) - set(mine):
        parts.append(f"the server did not show {', '.join(sorted(set(theirs) - set(mine)))}")
    changed = sorted(key_id for key_id in set(mine) & set(theirs) if mine[key_id] != theirs[key_id])
    if changed:
        parts.append(f"other keys under {', '.join(changed)}")
    return "; ".join(parts)

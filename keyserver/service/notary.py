"""The notary (§11.4): other servers' key documents, fetched from their origins,
checked, cached in the database and served countersigned.

A document is cached and served only once its origin's own keys signed it
(``parse_key_document``). The cache answers while its document satisfies the
request (``fresh``); otherwise the origin is asked again, at most once per
``NOTARY_MIN_REFETCH`` whatever the workers (the attempt is claimed in the database
before asking), and outside the write lock, within the request's time budget. An
origin that fails to answer, or answers badly, leaves the last good document in
place, which keeps being served even once expired, so that old signatures can still
be checked (§11.4).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Callable

from client.protocol.encoding import parse_json_object
from client.protocol.errors import DomainNotServed, ProtocolError, VerificationError
from client.protocol.serverkeys import parse_key_document

from ..storage import notary
from ..storage.db import Database, transaction
from ..storage.notary import CachedDocument
from . import origins
from .policy import NotaryPolicy, Policy
from .signing import Sign

log = logging.getLogger(__name__)

#: ``fetch(url, deadline, max_bytes)``: an origin's answer (``origins.fetch_document``).
Fetch = Callable[[str, float, int], bytes]


@dataclass(frozen=True)
class KeyRequest:
    """What a client asks of one server's keys: these key ids (none: all of them), in
    a document valid at least until ``minimum_valid_until_ts``."""

    server_name: str
    key_ids: frozenset[str] = frozenset()
    minimum_valid_until_ts: int = 0


def check_served(policy: Policy, server_name: str) -> None:
    """Refuse a server this notary does not answer for: only its configured origins and
    itself. Fetching any name on request would let anyone make the notary connect
    anywhere (docs/decisions.md)."""
    if server_name != policy.server_name and server_name not in policy.notary.origins:
        raise DomainNotServed(f"this notary does not answer for {server_name}")


def fresh(cached: CachedDocument, request: KeyRequest, now: int) -> bool:
    """Whether the cached document answers ``request`` without asking its origin
    (§11.4): valid until at least ``minimum_valid_until_ts``, holding every key id
    asked for, and younger than half of the lifetime it had left when fetched (so a
    document is refreshed well before it expires, and one fetched already expired is
    always worth asking for again)."""
    if cached.document is None:
        return False
    assert cached.fetched_ts is not None and cached.valid_until_ts is not None
    return (cached.valid_until_ts >= request.minimum_valid_until_ts
            and request.key_ids <= cached.key_ids
            and 2 * (now - cached.fetched_ts) < cached.valid_until_ts - cached.fetched_ts)


def document(db: Database, policy: NotaryPolicy, request: KeyRequest, now: int,
             deadline: float, fetch: Fetch = origins.fetch_document) -> CachedDocument | None:
    """The document to serve for ``request`` (a server in ``policy.origins``): the
    cached one if ``fresh``, else the origin's new one if it may be asked now and
    answers with a document its own keys signed, else the last good one; None while
    the origin never gave one. ``deadline`` (``time.monotonic()``) ends the asking."""
    name = request.server_name
    cached = notary.get(db, name)
    if cached is not None and fresh(cached, request, now):
        return cached
    with transaction(db):
        claimed = notary.claim(db, name, now, policy.min_refetch_ms)
    if not claimed:
        return _served(notary.get(db, name))     # another worker may have just stored one
    try:
        body = fetch(policy.origins[name], deadline, policy.max_document_bytes)
        parsed = parse_key_document(parse_json_object(body), name)
        text = json.dumps(parsed.raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (origins.OriginError, ProtocolError, VerificationError, ValueError,
            TypeError) as exc:
        log.warning("notary: keeping the last document of %s: %s", name, exc)
        return _served(cached)
    key_ids = frozenset(parsed.verify_keys) | frozenset(parsed.old_verify_keys)
    with transaction(db):
        notary.store(db, name, text, now, parsed.valid_until_ts, key_ids)
    return CachedDocument(name, text, now, parsed.valid_until_ts, key_ids, now)


def _served(cached: CachedDocument | None) -> CachedDocument | None:
    return cached if cached is not None and cached.document is not None else None


def countersign(document: dict, sign: Sign) -> dict:
    """``document`` as the notary serves it: the origin's signatures plus its own
    (§11.4). Signatures by anyone else are dropped, so nothing in the answer claims to
    be by this notary that it did not sign."""
    origin = document["server_name"]
    kept = {**document, "signatures": {origin: document["signatures"][origin]}}
    return sign(kept)

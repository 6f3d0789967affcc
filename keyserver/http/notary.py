"""The notary's endpoints (§11.4): ``POST /_matrix/key/v2/query`` and
``GET /_matrix/key/v2/query/<server_name>``, answering ``{"server_keys": [...]}``
with each document countersigned.

A cached answer costs neither a query nor a signature: each process keeps the cache
rows it read while the database is unchanged (``storage.db.DataVersion``; a worker's
refetch is a commit, so every other worker reads its row again) and the
countersigned bytes of each document while the document and the signing key stay
the same. The freshness rules are still judged at every request's time."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from flask import Blueprint, Response, current_app

from client.protocol.encoding import MAX_INT
from client.protocol.errors import BadRequest, InvalidIdentity, InvalidMessage
from client.protocol.identity import check_server_name
from client.protocol.signedjson import KEY_ID

from ..service import notary
from ..service.notary import KeyRequest
from ..service.policy import Policy
from ..service.serverkeys import signing_key_id
from ..storage.db import data_version, get_db
from ..storage.notary import CachedDocument
from .context import answer_signer, key_file, key_windows, policy, request_now
from .keys import document_bytes
from .params import json_body, query_int

bp = Blueprint("notary", __name__, url_prefix="/_matrix/key/v2")

#: A query names a few servers; 16 KiB holds over a hundred with their key ids.
MAX_QUERY_BYTES = 16 * 1024


@dataclass(frozen=True)
class _Row:
    version: int
    row: CachedDocument | None


@dataclass(frozen=True)
class _Signed:
    document: str
    key_id: str
    body: bytes


@bp.post("/query")
def query() -> Response:
    return _answer(parse_query(json_body(MAX_QUERY_BYTES)))


@bp.get("/query/<server_name>")
def query_server(server_name: str) -> Response:
    try:
        check_server_name(server_name)
    except InvalidIdentity as exc:
        raise BadRequest(str(exc)) from None
    minimum = query_int("minimum_valid_until_ts", 0, maximum=MAX_INT)
    return _answer([KeyRequest(server_name, frozenset(), minimum)])


def parse_query(body: dict) -> list[KeyRequest]:
    """``{"server_keys": {server_name: {key_id: {"minimum_valid_until_ts": ms}}}}``; an
    empty key map asks for every key, and a server's requests are merged into one
    (the largest minimum)."""
    server_keys = body.get("server_keys")
    if set(body) != {"server_keys"} or not isinstance(server_keys, dict):
        raise InvalidMessage('the body must be {"server_keys": {server_name: {key_id: ...}}}')
    requests = []
    for name, keys in server_keys.items():
        try:
            check_server_name(name)
        except InvalidIdentity as exc:
            raise InvalidMessage(str(exc)) from None
        if not isinstance(keys, dict) or not all(KEY_ID.fullmatch(key_id) for key_id in keys):
            raise InvalidMessage(f"server_keys.{name}: must map ed25519 key ids to criteria")
        minimum = 0
        for key_id, criteria in keys.items():
            if not isinstance(criteria, dict) or not set(criteria) <= {"minimum_valid_until_ts"}:
                raise InvalidMessage(f"server_keys.{name}.{key_id}: must be"
                                     ' {"minimum_valid_until_ts": ms}')
            value = criteria.get("minimum_valid_until_ts", 0)
            if type(value) is not int or not 0 <= value <= MAX_INT:
                raise InvalidMessage(f"server_keys.{name}.{key_id}.minimum_valid_until_ts:"
                                     " must be an integer in [0, 2^53-1]")
            minimum = max(minimum, value)
        requests.append(KeyRequest(name, frozenset(keys), minimum))
    return requests


def _answer(requests: list[KeyRequest]) -> Response:
    settings = policy()
    for request in requests:          # all refused before any origin is asked
        notary.check_served(settings, request.server_name)
    now = request_now()
    deadline = time.monotonic() + settings.notary.fetch_timeout_ms / 1000
    parts = []
    for request in requests:
        if request.server_name == settings.server_name:
            parts.append(document_bytes(now))
            continue
        cached = _document(settings, request, now, deadline)
        if cached is not None:
            parts.append(_countersigned(cached))
    response = Response(b'{"server_keys":[' + b",".join(parts) + b"]}",
                        mimetype="application/json")
    response.headers["Cache-Control"] = "no-cache"
    return response


def _document(settings: Policy, request: KeyRequest, now: int,
              deadline: float) -> CachedDocument | None:
    """The document to serve: this process's copy of the cache row if the database has
    not changed since it was read and it is fresh, else ``notary.document``'s."""
    rows: dict[str, _Row] = current_app.extensions.setdefault("keyserver.notary_rows", {})
    version = data_version()
    known = rows.get(request.server_name)
    if known is not None and known.version == version and known.row is not None \
            and notary.fresh(known.row, request, now):
        return known.row
    row = notary.document(get_db(), settings.notary, request, now, deadline, _fetcher())
    rows[request.server_name] = _Row(version, row)
    return row


def _fetcher() -> notary.Fetch:
    """How origins are asked: ``origins.fetch_document``, or a test's stand-in."""
    return current_app.extensions.get("keyserver.notary_fetch", notary.origins.fetch_document)


def _countersigned(cached: CachedDocument) -> bytes:
    assert cached.document is not None
    signed: dict[str, _Signed] = current_app.extensions.setdefault("keyserver.notary_signed", {})
    key_id = signing_key_id(key_windows(), key_file())
    entry = signed.get(cached.server_name)
    if entry is None or entry.document != cached.document or entry.key_id != key_id:
        document = notary.countersign(json.loads(cached.document), answer_signer())
        body = json.dumps(document, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()
        entry = signed[cached.server_name] = _Signed(cached.document, key_id, body)
    return entry.body

"""Hashchain endpoints (§12): chunked download in JSON or msgpack, and the head."""

from __future__ import annotations

import msgpack
from flask import Blueprint, Response, jsonify, request

from client.protocol.wire import Chunk, Head, format_chunk, format_head

from ..storage import chain
from ..storage.db import get_db
from .context import policy
from .params import MSGPACK, query_int, wants_msgpack

bp = Blueprint("hashchain", __name__, url_prefix="/v1/hashchain")

#: A complete chunk never changes: let every cache keep it.
IMMUTABLE = "public, max-age=31536000, immutable"


@bp.get("")
def fetch_hashchain() -> Response:
    start = query_int("start", 0)
    count = query_int("count", policy().default_chunk, minimum=1, maximum=policy().limits.max_chunk)
    use_msgpack = wants_msgpack()
    db = get_db()
    # The head first, and no entry past it: head_pos and entries agree even when an
    # append lands between the two reads.
    head = chain.head(db)
    entries = chain.read_entries(db, start, max(0, min(count, head.pos + 1 - start)))
    complete = len(entries) == count
    etag = None
    if complete:
        # The last entry's hash commits to the whole chunk (and all before it).
        etag = f"{entries[-1][:16].hex()}-{start}-{count}-{'m' if use_msgpack else 'j'}"
        if etag in request.if_none_match:
            response = Response(status=304)
            _cache_headers(response, etag)
            return response
    body = format_chunk(Chunk(start, head.pos, entries), binary=use_msgpack)
    if use_msgpack:
        response = Response(msgpack.packb(body, use_bin_type=True), mimetype=MSGPACK)
    else:
        response = jsonify(body)
    if complete:
        _cache_headers(response, etag)
    else:
        response.headers["Cache-Control"] = "no-cache"
    response.vary.add("Accept")
    return response


def _cache_headers(response: Response, etag: str) -> None:
    response.set_etag(etag)
    response.headers["Cache-Control"] = IMMUTABLE
    response.vary.add("Accept")


def served_head(head: chain.Head) -> dict:
    """§12 FetchLastHashChain: the stored head as served."""
    return format_head(Head(head.pos, head.entry, head.ts))


@bp.get("/head")
def fetch_head() -> Response:
    response = jsonify(served_head(chain.head(get_db())))
    response.headers["Cache-Control"] = "no-cache"
    return response

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
            return not_modified(etag)
    response = packed(format_chunk(Chunk(start, head.pos, entries), binary=use_msgpack),
                      use_msgpack)
    return cache_headers(response, etag)


def cache_headers(response: Response, etag: str | None) -> Response:
    """Let every cache keep an answer that never changes (one with an ``etag``), and
    none keep one that will; either varies with the encoding asked for."""
    if etag is not None:
        response.set_etag(etag)
        response.headers["Cache-Control"] = IMMUTABLE
    else:
        response.headers["Cache-Control"] = "no-cache"
    response.vary.add("Accept")
    return response


def not_modified(etag: str) -> Response:
    """304 for a cache that holds the answer under ``etag`` already."""
    return cache_headers(Response(status=304), etag)


def packed(body: dict, use_msgpack: bool) -> Response:
    """``body`` as msgpack (when asked for) or JSON."""
    if use_msgpack:
        return Response(msgpack.packb(body, use_bin_type=True), mimetype=MSGPACK)
    return jsonify(body)


def served_head(head: chain.Head) -> dict:
    """§12 FetchLastHashChain: the stored head as served."""
    return format_head(Head(head.pos, head.entry, head.ts))


@bp.get("/head")
def fetch_head() -> Response:
    response = jsonify(served_head(chain.head(get_db())))
    response.headers["Cache-Control"] = "no-cache"
    return response

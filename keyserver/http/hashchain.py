"""Hashchain endpoints (§8, §12): chunked download in JSON or msgpack, the head with
the newest checkpoint, checkpoints, and inclusion and consistency proofs."""

from __future__ import annotations

import msgpack
from flask import Blueprint, Response, jsonify, request

from client.protocol.checkpoint import parse_note
from client.protocol.encoding import b64encode
from client.protocol.errors import BadRequest, NotFound
from client.protocol.wire import Chunk, Head, LogHead, format_chunk, format_log_head

from ..service import checkpoints as checkpoint_service
from ..storage import chain, checkpoints
from ..storage.checkpoints import StoredCheckpoint
from ..storage.db import get_db
from .context import policy
from .params import MSGPACK, query_int, required_int, wants_msgpack

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
    """§12 FetchLastHashChain: the stored head as served, with the newest checkpoint's
    tree size, root hash and note (§8; null before the first checkpoint)."""
    served = Head(head.pos, head.entry, head.ts)
    newest = checkpoints.newest(get_db())
    if newest is None:
        return format_log_head(LogHead(served))
    return format_log_head(LogHead(served, newest.tree_size,
                                   parse_note(newest.note).checkpoint.root_hash, newest.note))


@bp.get("/head")
def fetch_head() -> Response:
    response = jsonify(served_head(chain.head(get_db())))
    response.headers["Cache-Control"] = "no-cache"
    return response


def note_response(stored: StoredCheckpoint | None) -> Response:
    """A stored checkpoint note with its cosignatures as ``text/plain`` (§8), or 404."""
    if stored is None:
        raise NotFound("no such checkpoint")
    response = Response(stored.note, mimetype="text/plain")
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/checkpoint")
def fetch_checkpoint() -> Response:
    """§8: the newest checkpoint, or the one of ``tree_size``, or the earliest
    ``covering`` a position, or the newest with ``quorum`` cosignatures."""
    asked = [name for name in ("tree_size", "covering", "quorum") if name in request.args]
    if len(asked) > 1:
        raise BadRequest("give at most one of tree_size, covering and quorum")
    db = get_db()
    if not asked:
        return note_response(checkpoints.newest(db))
    value = required_int(asked[0])
    if asked[0] == "tree_size":
        return note_response(checkpoints.of_size(db, value))
    if asked[0] == "covering":
        return note_response(checkpoints.covering(db, value))
    return note_response(checkpoints.with_quorum(db, value) if value else checkpoints.newest(db))


@bp.get("/proof/inclusion")
def inclusion_proof() -> Response:
    index, tree_size = required_int("index"), required_int("tree_size")
    hashes = checkpoint_service.inclusion_proof(get_db(), index, tree_size)
    return jsonify({"leaf_index": index, "tree_size": tree_size,
                    "hashes": [b64encode(h) for h in hashes]})


@bp.get("/proof/consistency")
def consistency_proof() -> Response:
    first, second = required_int("first"), required_int("second")
    hashes = checkpoint_service.consistency_proof(get_db(), first, second)
    return jsonify({"first": first, "second": second,
                    "hashes": [b64encode(h) for h in hashes]})

"""Key repository endpoints (§12): CreateUID/UpdateUID, FetchUID, lookup, history."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from client.protocol.encoding import b64encode, b64url_decode
from client.protocol.errors import NotFound
from client.protocol.identity import parse_identity

from ..service import uids
from ..service.checkpoints import inclusion_proof
from ..storage import chain
from ..storage.db import get_db, write
from .context import charger, policy, request_now, sign
from client.protocol.wire import BUNDLE_SIZE

from .hashchain import cache_headers, not_modified, packed, served_head
from .params import json_body, path_int, query_int, wants_msgpack

bp = Blueprint("users", __name__, url_prefix="/v1")

#: The largest body ``PUT /v1/users/<identity>`` takes (413 ``TOO_LARGE`` beyond). The
#: largest UIDMessage with every bounded field at its maximum (an identity of 254
#: characters, integers of 16 digits, sigkey and sigescrow, 8 pubkeys, 4 repouris and
#: a mixaddress of 256 characters each, 8 ciphersuites of 64 characters outside the
#: BMP, each written as a 12-byte ``\u`` escape pair, all three signatures) is 9,248
#: bytes as Python's ``json.dumps`` writes it, 5,067 as canonical JSON; 16 KiB leaves
#: room for a nymaddress of 5 KB besides. tests/test_users.py builds that message.
UID_BODY_BYTES = 16 * 1024


@bp.put("/users/<identity>")
def put_user(identity: str) -> Response:
    """Create (201) or update (200) an identity with a signed UIDMessage."""
    reply, created = uids.put_uid_message(get_db(), write, identity, json_body(UID_BODY_BYTES),
                                          request_now(), policy(), charger(), sign)
    return jsonify(reply), 201 if created else 200


@bp.get("/uids/<uid_index>")
def fetch_uid(uid_index: str) -> Response:
    reply = uids.fetch_reply(get_db(), b64url_decode(uid_index, "UIDIndex", length=32))
    if reply is None:
        raise NotFound("no UIDMessage under this UIDIndex")
    response = jsonify(reply)
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return response


@bp.get("/uids/bundle/<bundle>")
def fetch_bundle(bundle: str) -> Response:
    """§5.1: the replies of bundle B by position, so that fetching one reveals no
    UIDIndex. A bundle below the head's is complete and never changes: caches and
    mirrors keep it, and then the origin does not even see it asked for."""
    number = path_int(bundle, "bundle")
    use_msgpack = wants_msgpack()
    db = get_db()
    head = chain.head(db)
    head_bundle = head.pos // BUNDLE_SIZE
    if number > head_bundle:
        raise NotFound(f"bundle {number} is beyond the head's bundle {head_bundle}")
    etag = None
    if number < head_bundle:
        # The last entry's hash commits to every entry of the bundle, each reply
        # to its entry; the encoding is part of the answer.
        last = chain.entry_at(db, (number + 1) * BUNDLE_SIZE - 1)
        etag = f"{last.hash[:16].hex()}-b{number}-{'m' if use_msgpack else 'j'}"
        if etag in request.if_none_match:
            return not_modified(etag)
    return cache_headers(packed(uids.reply_bundle(db, number), use_msgpack), etag)


def _looked_up(identity: str) -> str:
    """Lookups reveal whom someone looks for, so the operator may turn them off."""
    parse_identity(identity)
    if not policy().lookup_enabled:
        raise NotFound("lookup is disabled on this server: download the chain and search it")
    return identity


@bp.get("/users/<identity>")
def lookup_user(identity: str) -> Response:
    db = get_db()
    reply = uids.latest_reply(db, _looked_up(identity))
    if reply is None:
        raise NotFound(f"{identity} is not registered")
    head = served_head(chain.head(db))
    pos, tree_size = reply["entry"]["hashchain_pos"], head["tree_size"]
    # §12: the entry's inclusion in the newest checkpoint's tree, as Key
    # Transparency's GetEntry gives it; null while no checkpoint covers it yet.
    leaf_proof = None if tree_size is None or pos >= tree_size else {
        "leaf_index": pos, "tree_size": tree_size,
        "hashes": [b64encode(h) for h in inclusion_proof(db, pos, tree_size)]}
    return jsonify(identity=identity, uid_message_reply=reply, leaf_proof=leaf_proof,
                   head=head)


@bp.get("/users/<identity>/history")
def user_history(identity: str) -> Response:
    start = query_int("start", 0)
    page_size = query_int("page_size", 10, minimum=1, maximum=100)
    page = uids.history(get_db(), _looked_up(identity), start, page_size)
    if page is None:
        raise NotFound(f"{identity} is not registered")
    values, next_start = page
    return jsonify(values=values, next_start=next_start)

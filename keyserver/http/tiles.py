"""The log as C2SP ``tlog-tiles`` (§8, §12): ``/tile/<L>/<N>[.p/<W>]`` hash tiles,
``/tile/entries/<N>[.p/<W>]`` entry bundles and ``/checkpoint``, for the tree of
the newest checkpoint. Full tiles never change: every cache may keep them. A path
off the tile grammar is 400 ``BAD_REQUEST``; a tile beyond the newest checkpoint's
tree (or any before the first checkpoint) is 404 ``NOT_FOUND``."""

from __future__ import annotations

from flask import Blueprint, Response

from client.protocol.tiles import parse_tile_path

from ..service import tiles
from ..storage.db import get_db
from .hashchain import IMMUTABLE, note_response

bp = Blueprint("tiles", __name__)


@bp.get("/tile/<path:rest>")
def fetch_tile(rest: str) -> Response:
    tile = parse_tile_path(f"tile/{rest}")
    db = get_db()
    data = tiles.read_tile(db, tile, tiles.newest_checkpoint(db).tree_size)
    response = Response(data, mimetype="application/octet-stream")
    # A partial tile's bytes never change either, but clients ask for the full tile
    # once it exists (C2SP tlog-tiles): only full ones are worth a cache's room.
    response.headers["Cache-Control"] = IMMUTABLE if tile.full else "no-cache"
    return response


@bp.get("/checkpoint")
def fetch_checkpoint() -> Response:
    """The newest checkpoint note (§8), as ``/v1/hashchain/checkpoint`` serves it."""
    return note_response(tiles.newest_checkpoint(get_db()))

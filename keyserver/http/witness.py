"""The witness endpoint (§8.1, C2SP ``tlog-witness``): ``POST /witness/add-checkpoint``
answers 200 with this server's cosignature line (``text/plain``), or 409 with the size
it holds (``text/x.tlog.size``: the log sends again from there); the other refusals
are the usual ``{"errcode", "error"}`` with the statuses C2SP fixes."""

from __future__ import annotations

from flask import Blueprint, Response

from client.protocol.cosignature import SIZE_CONTENT_TYPE, format_size

from ..service.witness import SizeMismatch, add_checkpoint
from ..storage.db import write
from .context import policy, request_now, witness
from .params import body_bytes

bp = Blueprint("witness", __name__, url_prefix="/witness")

#: The largest add-checkpoint body: ``old``, 63 proof lines of 45 bytes, and a note
#: with room for a hundred signature lines (Go's note.Open takes no more).
ADD_CHECKPOINT_BYTES = 32 * 1024


@bp.post("/add-checkpoint")
def add() -> Response:
    signature = add_checkpoint(write, policy().witness_logs, witness(),
                               body_bytes(ADD_CHECKPOINT_BYTES), request_now())
    return Response(signature.line(), mimetype="text/plain")


@bp.errorhandler(SizeMismatch)
def size_mismatch(exc: SizeMismatch) -> Response:
    return Response(format_size(exc.size), status=409, content_type=SIZE_CONTENT_TYPE)

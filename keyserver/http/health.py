"""Health for load balancers and supervisors (not in the spec): ``GET /healthz`` says
the process serves; ``GET /readyz`` says it can take writes now: the database
answers, a write could start within a second, and the disk is above the
``MIN_FREE_BYTES`` reserve and has room for a write. Not ready is 503 with what
failed, in words (no figures)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..storage import chain
from ..storage.db import check_writable, disk_reserve, fault_kind, get_db

bp = Blueprint("health", __name__)

#: The longest /readyz waits for the write lock (a busy server is still ready).
READY_WAIT_S = 1.0
#: The room /readyz asks the disk for, beyond any reserve: a few of the largest writes
#: (a request body is at most 256 KiB by default). Less is a full disk, even when no
#: write has met it yet, and even without a reserve.
READY_ROOM_BYTES = 2**20
#: What a failed check says, by the kind of storage fault (``fault_kind``).
FAULT_WORDS = {"busy": "busy", "space": "disk full", "io": "I/O error"}


@bp.get("/healthz")
def healthz() -> Response:
    return _uncached(jsonify(status="ok"))


@bp.get("/readyz")
def readyz() -> Response:
    checks = {"database": "ok", "writes": "ok", "disk": "ok"}
    reserve = disk_reserve()
    if reserve.low():
        checks["disk"] = "below the free-space reserve (MIN_FREE_BYTES)"
    else:
        try:
            if not reserve.has_room(READY_ROOM_BYTES):
                checks["disk"] = FAULT_WORDS["space"]
        except OSError:
            checks["disk"] = FAULT_WORDS["io"]
    step = "database"
    try:
        db = get_db()
        chain.head(db)
        step = "writes"
        check_writable(db, min(READY_WAIT_S, db.wait_s))
    except Exception as exc:
        kind = fault_kind(exc)
        if kind is None:
            raise
        checks[step] = FAULT_WORDS[kind]
    ready = all(value == "ok" for value in checks.values())
    response = jsonify(ready=ready, **checks)
    response.status_code = 200 if ready else 503
    return _uncached(response)


def _uncached(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response

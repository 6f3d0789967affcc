"""The server's HTTP layer (§1, §12): blueprints that parse a request, call one
service or storage function, and serialize its answer; the error handlers; the
request limits. No SQL and no crypto here."""

from __future__ import annotations

from flask import Flask

from . import (capabilities, context, errors, hashchain, health, keyinits, keys, notary,
               observe, params, tiles, tokens, users, witness)


def init_app(app: Flask) -> None:
    """Register the request log and metrics, the clock hook, the error handlers, the
    body limit and the blueprints."""
    observe.init_app(app)
    app.before_request(context.read_clock)
    errors.init_app(app)
    params.init_app(app)
    for blueprint in (capabilities.bp, hashchain.bp, users.bp, tokens.bp, keyinits.bp, keys.bp,
                      health.bp, notary.bp, tiles.bp, witness.bp):
        app.register_blueprint(blueprint)

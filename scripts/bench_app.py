"""The keyserver app with one more route, for ``scripts/bench keydoc`` only: a trivial
Flask view (``GET /_bench/trivial``) through the same app, hooks and server, whose
rate is the ceiling the other endpoints are compared with. Never shipped: a public
no-op route would be one more thing to attack for nothing.

    gunicorn --chdir scripts 'bench_app:create_app()'
"""

from __future__ import annotations

from flask import Flask, Response

import keyserver


def create_app() -> Flask:
    app = keyserver.create_app()

    @app.get("/_bench/trivial")
    def trivial() -> Response:
        return Response(b"{}", mimetype="application/json")

    return app

"""The server's service layer: the decisions of each operation (§4, §9, §10, §12).

Functions here take the ``Policy``, the request's one ``now_ms`` and a store (and the
``write`` runner); they never read ``flask.current_app``, ``flask.request`` or the
clock, so the same decision serves a request, a CLI command and a test."""

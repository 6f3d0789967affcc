"""The hashchain keyserver, a Flask application (``create_app`` is its factory)."""

from __future__ import annotations

import os
from typing import Any, Mapping

from flask import Flask


def create_app(test_config: Mapping[str, Any] | None = None,
               instance_path: str | None = None) -> Flask:
    """Build the app: defaults, then ``<instance>/config.py``, then ``KEYSERVER_*``
    environment variables, then ``test_config``.

    The instance folder is ``instance_path``, else ``$KEYSERVER_INSTANCE``, else
    Flask's default (``instance/`` beside the package).
    """
    instance_path = instance_path or os.environ.get("KEYSERVER_INSTANCE") or None
    if instance_path:
        instance_path = os.path.abspath(instance_path)
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    app.config.from_object("keyserver.defaults")
    from .config import ConfigError, check_config

    try:
        app.config.from_pyfile("config.py", silent=True)
    except SyntaxError as exc:
        raise ConfigError(f"{exc.filename}, line {exc.lineno}: {exc.msg}") from None
    app.config.from_prefixed_env("KEYSERVER")
    if test_config is not None:
        app.config.from_mapping(test_config)
    check_config(app.config)
    # One byte over the limit: see params.json_body.
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_REQUEST_BYTES"] + 1
    app.json.sort_keys = True
    app.json.ensure_ascii = False
    app.json.compact = True

    from . import capabilities, cli, db, errors, hashchain, keyinits, params, tokens, users

    db.init_app(app)
    errors.init_app(app)
    params.init_app(app)
    cli.init_app(app)
    app.register_blueprint(capabilities.bp)
    app.register_blueprint(hashchain.bp)
    app.register_blueprint(users.bp)
    app.register_blueprint(tokens.bp)
    app.register_blueprint(keyinits.bp)
    return app

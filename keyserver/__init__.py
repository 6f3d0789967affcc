"""The hashchain keyserver, a Flask application (``create_app`` is its factory)."""

from __future__ import annotations

import os
from typing import Any, Mapping

from flask import Flask


def create_app(test_config: Mapping[str, Any] | None = None,
               instance_path: str | None = None, serving: bool = True) -> Flask:
    """Build the app: defaults, then ``<instance>/config.py``, then ``KEYSERVER_*``
    environment variables, then ``test_config``; the checked configuration becomes
    the app's one ``Policy`` (``http.context.policy()``).

    The instance folder is ``instance_path``, else ``$KEYSERVER_INSTANCE``, else
    Flask's default (``instance/`` beside the package).

    An app that will serve (``serving``, the default: gunicorn, ``keyserver run`` and
    ``worker``) is refused with ``LogShrunk`` when its chain is shorter than the
    largest tree size the log published (a restored older backup); operator commands
    that only inspect or repair the instance make theirs with ``serving=False``.
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
    # The ceiling of any read of a body, one byte over the limit (see
    # http.params.json_body, which sets each endpoint's own, lower one).
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_REQUEST_BYTES"] + 1
    app.json.sort_keys = True
    app.json.ensure_ascii = False
    app.json.compact = True

    from . import cli, http
    from .http.context import POLICY
    from .service import policy
    from .storage import db

    app.extensions[POLICY] = policy.from_config(app.config)
    db.init_app(app)
    http.init_app(app)
    cli.init_app(app)
    from .instance import apply_policy, check_published

    if serving:
        check_published(app)
    apply_policy(app)
    from .http.prepared import PreparedAnswers

    app.wsgi_app = PreparedAnswers(app, app.wsgi_app)
    if app.config["TRUSTED_PROXIES"]:
        from .http.proxies import TrustedProxies, parse_networks

        app.wsgi_app = TrustedProxies(app.wsgi_app,
                                      parse_networks(app.config["TRUSTED_PROXIES"]))
    return app

"""The operator's ``keyserver`` command.

``init`` and ``run`` work on an instance folder; the other commands are also
registered on the app's Flask CLI (``flask --app keyserver chain verify``).
Commands stay thin: parse options, call one function, echo.
"""

from __future__ import annotations

import functools
import os
import sys

import click
from flask import Flask, current_app
from flask.cli import ScriptInfo

from client.errors import ChainError, ProtocolError

from . import chainstore, create_app, db


def _open_instance(path: str | None) -> Flask:
    app = create_app(instance_path=path)
    if not os.path.exists(db.database_path(app)):
        raise click.ClickException(
            f"no keyserver instance in {app.instance_path}; create one with 'keyserver init'")
    return app


def with_instance(command):
    """Give a command ``--instance PATH`` (or ``$KEYSERVER_INSTANCE``) and run it
    inside that instance's app context; under the Flask CLI (``flask --app``),
    the app it loads is used instead."""

    @click.option("--instance", "instance_path", envvar="KEYSERVER_INSTANCE",
                  type=click.Path(file_okay=False), metavar="PATH",
                  help="Instance folder (default: $KEYSERVER_INSTANCE).")
    @functools.wraps(command)
    def wrapper(instance_path, **kwargs):
        info = click.get_current_context().find_object(ScriptInfo)
        app = info.load_app() if info is not None else _open_instance(instance_path)
        with app.app_context():
            return command(**kwargs)

    return wrapper


@click.group(help="Operate a hashchain keyserver.")
def main() -> None:
    pass


@main.command("init")
@click.option("--instance", "instance_path", envvar="KEYSERVER_INSTANCE", required=True,
              type=click.Path(file_okay=False), help="Folder to create the instance in.")
@click.option("--server-name", required=True, help="DNS name of the server (no port).")
@click.option("--url", "base_url", required=True, help="Public base URL, e.g. https://keys.example.org")
@click.option("--domain", "domains", multiple=True,
              help="Domain whose identities it serves (repeatable; default: the server name).")
def init_command(instance_path: str, server_name: str, base_url: str, domains: tuple[str, ...]):
    """Create an instance: config, signing key, database and chain entry 0."""
    from .instance import InstanceExists, init_instance

    try:
        app = init_instance(instance_path, server_name, base_url, list(domains) or [server_name])
    except (InstanceExists, ValueError, ProtocolError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Created keyserver instance for {server_name} in {app.instance_path}")


@main.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@with_instance
def run_command(host: str, port: int) -> None:
    """Serve the instance with Flask's threaded server (use gunicorn in production)."""
    app = current_app._get_current_object()
    click.echo(f"Serving keyserver {app.config['KEYSERVER_NAME']} on http://{host}:{port}/ "
               f"(instance {app.instance_path})")
    sys.stdout.flush()
    app.run(host=host, port=port, threaded=True, use_reloader=False)


@click.group("chain", help="Inspect and load the hashchain.")
def chain_group() -> None:
    pass


@chain_group.command("verify")
@with_instance
def chain_verify_command() -> None:
    """Recompute every link of the stored chain; report the first bad position."""
    try:
        length = chainstore.verify_stored(db.get_db())
    except ChainError as exc:
        raise click.ClickException(f"chain broken at position {exc.position}: {exc}") from None
    click.echo(f"chain OK: {length} entries")


@chain_group.command("load")
@click.option("-n", "count", type=click.IntRange(1), required=True,
              help="Number of synthetic identities to append.")
@click.option("--domain", help="Domain of the identities (default: the first served one).")
@with_instance
def chain_load_command(count: int, domain: str | None) -> None:
    """Append N real UIDMessages of generated identities (benchmarks, tests)."""
    from .loadgen import load

    database = db.get_db()
    with click.progressbar(length=count, label="appending") as bar:
        length = load(database, count, domain or current_app.config["DOMAINS"][0],
                      progress=bar.update)
    click.echo(f"chain length now {length}")


main.add_command(chain_group)


def init_app(app: Flask) -> None:
    app.cli.add_command(chain_group)

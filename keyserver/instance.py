"""Creating an instance folder: config, signing key, database, and chain entry 0.

Entry 0 is the server's own UIDMessage for ``keyserver@<server name>`` (§7.2),
so a client that knows the server name can follow the server's keys on the
chain from the very first entry.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

import nacl.signing
from flask import Flask

from client.protocol.identity import check_server_name, is_domain

from . import create_app, defaults
from .clock import now_ms
from .http.context import POLICY
from .service import own, serverkeys, signing, tokenkeys
from .storage import chain, checkpoints, db, files, published, tree

#: Files whose presence means an instance already lives in a folder.
INSTANCE_FILES = ("config.py", defaults.DATABASE, defaults.SIGNING_KEY_FILE,
                  defaults.LOG_KEY_FILE, defaults.WITNESS_KEY_FILE)


class LogShrunk(Exception):
    """The chain is shorter than the largest tree size this log ever published: serving
    it would show clients and monitors a log that lost entries (a fork of the log)."""


class InstanceExists(Exception):
    """``keyserver init`` never overwrites an instance (its keys and chain would be lost)."""


def format_config(server_name: str, base_url: str, domains: list[str]) -> str:
    return (
        "# Keyserver instance configuration (see keyserver/defaults.py for every key).\n"
        f"KEYSERVER_NAME = {server_name!r}\n"
        f"BASE_URL = {base_url!r}\n"
        f"DOMAINS = {domains!r}\n"
    )


def init_instance(path: str, server_name: str, base_url: str, domains: list[str]) -> Flask:
    """Create a new instance in ``path``; raise ``InstanceExists`` if one is there.

    A failure part-way (an error, Ctrl-C) leaves nothing behind, so that ``init``
    can simply run again: a new folder is built beside ``path`` under a temporary
    name and renamed into place when complete. A folder that already exists (made
    by the operator, perhaps a mount point or in a parent we may not write) is
    built in place, and on failure loses whatever init added to it.

    DNS names are not case-sensitive: the server name and domains are stored in
    lowercase, the form the protocol uses (§2).
    """
    server_name, domains = server_name.lower(), [domain.lower() for domain in domains]
    check_server_name(server_name)
    for domain in domains:
        if not is_domain(domain):
            raise ValueError(f"{domain!r} is not a valid domain")
    existing = [name for name in INSTANCE_FILES if os.path.exists(os.path.join(path, name))]
    if existing:
        raise InstanceExists(f"{path} already holds an instance ({', '.join(existing)}); "
                             "refusing to overwrite it")
    config = format_config(server_name, base_url.rstrip("/"), domains)
    if os.path.isdir(path):
        with _undone_on_failure(path):
            _build(path, config)
    else:
        _build_and_rename(path, config)
    return create_app(instance_path=path)


def check_published(app: Flask) -> None:
    """Refuse (``LogShrunk``) an instance whose chain is shorter than the tree size
    recorded in ``published_size`` (``storage.published``). An instance made before
    that file existed gets it from its newest checkpoint."""
    path = db.database_path(app)
    if not os.path.exists(path):
        return   # init is making the instance
    recorded = published.read(app.instance_path)
    with contextlib.closing(db.connect(path, app.config["SQLITE_SYNCHRONOUS"], create=False,
                                       wait_s=app.config["REQUEST_WAIT_BOUND"] / 1000)
                            ) as database:
        head = chain.head(database)
        length = head.pos + 1 if head else 0
        if recorded is None:
            newest = checkpoints.newest_size(database)
            if newest is not None:
                published.record(app.instance_path, newest)
            return
    if length < recorded:
        raise LogShrunk(
            f"refusing to serve {app.instance_path}: its chain holds {length} entries but "
            f"this log already published a tree of size {recorded} ({published.FILE}); "
            "serving it would shrink a published log. Restore a newer backup that holds "
            f"at least {recorded} entries, or restore with --accept-shorter-log, or start "
            "a new log under a new server name ('keyserver init'); see README, "
            "Production, Backups")


def apply_policy(app: Flask) -> None:
    """Make the chain state the configured time limits (§4: a changed limit is an
    update of keyserver@, appended before the server applies it). Runs when an app
    is made for an existing instance, so a changed configuration takes effect with
    the restart that loads it; every process checks, one appends."""
    path = db.database_path(app)
    if not os.path.exists(path):
        return   # init is making the instance
    # §8.1: an instance made before witnesses gets its witness key now (once, however
    # many workers start together).
    signing.witness_key(signing.key_file_path(app.instance_path,
                                              app.config["WITNESS_KEY_FILE"]))
    with contextlib.closing(db.connect(path, app.config["SQLITE_SYNCHRONOUS"], create=False,
                                       wait_s=app.config["REQUEST_WAIT_BOUND"] / 1000)
                            ) as database:
        db.upgrade_db(database)
        if own.latest(database) is None:
            app.logger.warning("this instance predates preferences.server (revision 2 of the"
                               " protocol): clients will refuse its chain; make a new one")
            return
        keyfile = signing.KeyFile(signing.key_file_path(app.instance_path,
                                                        app.config["SIGNING_KEY_FILE"]))
        now = now_ms()
        serverkeys.adopt(database, list(keyfile.keys().values()), now)
        if tree.size(database) < chain.head(database).pos + 1:   # made before §8's tree
            with db.transaction(database):
                tree.backfill(database)
        keys = serverkeys.current_keys(database, keyfile, now)
        if own.apply_limits(database, app.extensions[POLICY], keys, now):
            app.logger.info("the configured time limits differ from the chain's: "
                            "appended an update of keyserver@ that states them")


def _build_and_rename(path: str, config: str) -> None:
    parent, name = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.init-", dir=parent)  # mode 0700
    try:
        _build(staging, config)
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def _undone_on_failure(folder: str) -> Iterator[None]:
    """On any failure, remove what appeared in ``folder`` meanwhile, and only that."""
    before = set(os.listdir(folder))
    try:
        yield
    except BaseException:
        for name in set(os.listdir(folder)) - before:
            added = os.path.join(folder, name)
            if os.path.isdir(added) and not os.path.islink(added):
                shutil.rmtree(added, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(added)
        raise


def _build(folder: str, config: str) -> None:
    """Write config, signing, log and witness keys, database, chain entry 0 and a token
    key into ``folder``.

    The folder is made 0700 first, so nothing in it is reachable by others while it
    is built, and everything in it private at the end, whatever modes an existing
    folder and its files had. The database connection is closed before returning:
    the folder may be renamed."""
    os.chmod(folder, 0o700)
    with open(os.path.join(folder, "config.py"), "w") as handle:
        handle.write(config)
    app = create_app(instance_path=folder)
    key = signing.generate_key()
    signing.write_keys(signing.key_file_path(app.instance_path, app.config["SIGNING_KEY_FILE"]),
                       [key])
    log_key = nacl.signing.SigningKey.generate()
    signing.write_log_key(signing.key_file_path(app.instance_path, app.config["LOG_KEY_FILE"]),
                          log_key)
    signing.witness_key(signing.key_file_path(app.instance_path, app.config["WITNESS_KEY_FILE"]))
    database = db.connect(db.database_path(app), app.config["SQLITE_SYNCHRONOUS"])
    policy = app.extensions[POLICY]
    log_vkey = own.log_verifier_key(policy.server_name, log_key)
    with app.app_context(), contextlib.closing(database):
        db.init_db(database)
        now = now_ms()
        serverkeys.adopt(database, [key], now)
        # Entry 0 lists the first token key (§10.4), in the key's own transaction.
        tokenkeys.create_key(database, app.instance_path, policy.token_key_lifetime_ms, now,
                             lambda token_key: own.create(
                                 database, policy, key,
                                 own.preferences(policy, log_vkey, [token_key.key_id]), now))
    files.make_private(folder)

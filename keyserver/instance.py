"""Creating an instance folder: config, signing key, database, and chain entry 0.

Entry 0 is the server's own UIDMessage for ``keyserver@<server name>`` (§7.2),
so a client that knows the server name can follow the server's keys on the
chain from the very first entry.
"""

from __future__ import annotations

import contextlib
import os

import nacl.signing
from flask import Flask

from client.encoding import now_ms
from client.hashchain import ZERO_HASH
from client.identity import check_server_name, is_domain, server_identity
from client.keys import ed25519_entry
from client.uidmessage import build_uid_content, parse_uid_message, sign_uid_content

from . import create_app, db, defaults, repository, signing, tokenkeys

#: Files whose presence means an instance already lives in a folder.
INSTANCE_FILES = ("config.py", defaults.DATABASE, defaults.SIGNING_KEY_FILE)


class InstanceExists(Exception):
    """``keyserver init`` never overwrites an instance (its keys and chain would be lost)."""


def format_config(server_name: str, base_url: str, domains: list[str]) -> str:
    return (
        "# Keyserver instance configuration (see keyserver/defaults.py for every key).\n"
        f"KEYSERVER_NAME = {server_name!r}\n"
        f"BASE_URL = {base_url!r}\n"
        f"DOMAINS = {domains!r}\n"
    )


def own_uid_message(app: Flask, signing_key: nacl.signing.SigningKey, now: int,
                    *, msgcount: int = 0, lastentry: bytes = ZERO_HASH,
                    previous: nacl.signing.SigningKey | None = None) -> dict:
    """The server's UIDMessage for keyserver@<name>, signed by its signing key."""
    content = build_uid_content(
        server_identity(app.config["KEYSERVER_NAME"]), ed25519_entry(signing_key),
        msgcount=msgcount, not_before_ts=now, not_after_ts=now + app.config["MAX_UID_LIFETIME"],
        lastentry=lastentry, repouris=[app.config["BASE_URL"]],
    )
    return sign_uid_content(content, signing_key, previous_sigkey=previous)


def init_instance(path: str, server_name: str, base_url: str, domains: list[str]) -> Flask:
    """Create a new instance in ``path``; raise ``InstanceExists`` if one is there."""
    check_server_name(server_name)
    for domain in domains:
        if not is_domain(domain):
            raise ValueError(f"{domain!r} is not a valid domain")
    existing = [name for name in INSTANCE_FILES if os.path.exists(os.path.join(path, name))]
    if existing:
        raise InstanceExists(f"{path} already holds an instance ({', '.join(existing)}); "
                             "refusing to overwrite it")
    os.makedirs(path, mode=0o700, exist_ok=True)
    try:
        with open(os.path.join(path, "config.py"), "w") as handle:
            handle.write(format_config(server_name, base_url.rstrip("/"), domains))
        app = create_app(instance_path=path)
        key = signing.generate_key()
        signing.write_keys(signing.key_file_path(app), [key])
        with app.app_context():
            database = db.get_db()
            db.init_db(database)
            now = now_ms()
            message = parse_uid_message(own_uid_message(app, key.signing_key, now))
            with db.transaction(database):
                repository.store_uid_message(database, message, now)
            tokenkeys.create_key(database, app, now)
    except BaseException:
        # A half-made instance would block the next attempt; nothing in it is worth keeping.
        for name in INSTANCE_FILES + (defaults.DATABASE + "-wal", defaults.DATABASE + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(path, name))
        raise
    return app

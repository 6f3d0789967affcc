"""The server's RSA token keys (§10): RSA-2048, e = 65537, one PEM file each
(mode 0600) under ``<instance>/token_keys/``, with their validity in the database.

Rotation adds a key; an old key keeps verifying tokens until its own
``not_after_ts``, so tokens bought before a rotation stay spendable. The newest
valid key issues.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, current_app

from client.protocol.encoding import b64encode
from .files import fsync_directory, write_secret
from client.protocol.tokens import generate_token_key, parse_spki, spki, token_key_id

from .db import Database, transaction

KEY_DIR = "token_keys"


@dataclass(frozen=True)
class TokenKey:
    key_id: bytes
    spki: bytes
    created_ts: int
    not_after_ts: int
    filename: str

    def to_json(self) -> dict:
        """The capabilities entry (§12: ``token_keys``)."""
        return {"key_id": b64encode(self.key_id), "spki": b64encode(self.spki),
                "not_after_ts": self.not_after_ts}


def create_key(db: Database, app: Flask, now: int) -> TokenKey:
    """Generate a token key valid for ``TOKEN_KEY_LIFETIME`` and make it the issuing one.

    The file and its row appear together: the file is written under a temporary
    name and renamed inside the row's transaction, just before COMMIT, so no other
    process sees a row without its file; any failure removes the file again."""
    private = generate_token_key()
    key_id = token_key_id(private.public_key())
    key = TokenKey(key_id, spki(private.public_key()), now,
                   now + app.config["TOKEN_KEY_LIFETIME"], f"{key_id.hex()[:16]}.pem")
    directory = os.path.join(app.instance_path, KEY_DIR)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, key.filename)
    pending = f"{path}.tmp"  # the file a failure must remove
    try:
        write_secret(pending, private.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        with transaction(db):
            db.conn.execute(
                "INSERT INTO token_keys (key_id, spki, created_ts, not_after_ts, filename)"
                " VALUES (?, ?, ?, ?, ?)",
                (key.key_id, key.spki, key.created_ts, key.not_after_ts, key.filename))
            os.replace(pending, path)
            pending = path
            fsync_directory(directory)  # the rename, before the row commits
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(pending)
        raise
    return key


def all_keys(db: Database) -> list[TokenKey]:
    return [TokenKey(*row) for row in db.conn.execute(
        "SELECT key_id, spki, created_ts, not_after_ts, filename FROM token_keys"
        " ORDER BY created_ts, rowid")]


def valid_keys(db: Database, now: int) -> list[TokenKey]:
    """Keys that still verify tokens: ``now < not_after_ts``, oldest first."""
    return [key for key in all_keys(db) if now < key.not_after_ts]


def issuing_key(db: Database, now: int) -> TokenKey | None:
    keys = valid_keys(db, now)
    return keys[-1] if keys else None


def find_valid(db: Database, key_id: bytes, now: int) -> rsa.RSAPublicKey | None:
    """The public key with this id if it verifies tokens now, else None.

    Every paid request asks, so the keys are cached per process; a key id the
    cache does not know (a rotation by the CLI meanwhile) reloads it once."""
    cache = current_app.extensions.get("keyserver.token_keys")
    if cache is None or key_id not in cache:
        cache = {key.key_id: key for key in all_keys(db)}
        current_app.extensions["keyserver.token_keys"] = cache
    key = cache.get(key_id)
    return public_key(key) if key is not None and now < key.not_after_ts else None


def public_key(key: TokenKey) -> rsa.RSAPublicKey:
    """Parsed once per process: every paid request needs it."""
    cache = current_app.extensions.setdefault("keyserver.token_public_keys", {})
    if key.key_id not in cache:
        cache[key.key_id] = parse_spki(key.spki, error=RuntimeError)
    return cache[key.key_id]


def private_key(key: TokenKey) -> rsa.RSAPrivateKey:
    cache = current_app.extensions.setdefault("keyserver.token_private_keys", {})
    if key.key_id not in cache:
        path = os.path.join(current_app.instance_path, KEY_DIR, key.filename)
        with open(path, "rb") as handle:
            loaded = serialization.load_pem_private_key(handle.read(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey) or spki(loaded.public_key()) != key.spki:
            raise RuntimeError(f"token key file {path} does not hold key {key.key_id.hex()}")
        cache[key.key_id] = loaded
    return cache[key.key_id]

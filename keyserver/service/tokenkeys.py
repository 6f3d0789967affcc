"""The server's RSA token keys (§10): RSA-2048, e = 65537, one PEM file each
(mode 0600) under ``<instance>/token_keys/``, with their rows in ``storage.tokens``.

The keys the server redeems are those its own latest message lists in
``preferences.server.token_keys`` (§10.4, at most 2), so every client sees the same
ones: rotation adds a key and lists it with the newest previous one (tokens bought
before a rotation stay spendable until that key's ``not_after_ts``), in the same
transaction as the update of ``keyserver@`` that lists them. The newest listed valid
key issues.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Callable, Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from client.protocol.tokens import (BlindSigner, generate_token_key, parse_spki, spki,
                                    token_key_id)

from client.protocol.uidmessage import MAX_TOKEN_KEYS

from ..storage import tokens
from ..storage.db import Database, transaction
from ..storage.files import fsync_directory, write_secret
from ..storage.tokens import TokenKey
from . import own
from .policy import Policy
from .signing import ServerKey

KEY_DIR = "token_keys"


def key_dir(instance_path: str) -> str:
    return os.path.join(instance_path, KEY_DIR)


def usable_keys(db: Database, now: int) -> list[TokenKey]:
    """The keys the server redeems at ``now``: listed on the chain (§10.4) and not
    expired, oldest first; the last one issues."""
    listed = set(own.current(db).token_keys)
    return [key for key in tokens.valid_keys(db, now) if key.key_id in listed]


def issuing_key(db: Database, now: int) -> TokenKey | None:
    keys = usable_keys(db, now)
    return keys[-1] if keys else None


def create_key(db: Database, instance_path: str, lifetime_ms: int, now: int,
               then: Callable[[TokenKey], object]) -> TokenKey:
    """Generate a token key valid for ``lifetime_ms``; ``then(key)`` runs in the same
    transaction (it lists the key on the chain).

    The file and its row appear together: the file is written under a temporary
    name and renamed inside the row's transaction, just before COMMIT, so no other
    process sees a row without its file; any failure removes the file again."""
    private = generate_token_key()
    key_id = token_key_id(private.public_key())
    key = TokenKey(key_id, spki(private.public_key()), now, now + lifetime_ms,
                   f"{key_id.hex()[:16]}.pem")
    directory = key_dir(instance_path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, key.filename)
    pending = f"{path}.tmp"  # the file a failure must remove
    try:
        write_secret(pending, private.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        with transaction(db):
            tokens.insert_key(db, key)
            then(key)
            os.replace(pending, path)
            pending = path
            fsync_directory(directory)  # the rename, before the row commits
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(pending)
        raise
    return key


def rotate(db: Database, instance_path: str, policy: Policy, keys: Sequence[ServerKey],
           now: int) -> TokenKey:
    """A new issuing key, listed on the chain with the newest previous listed key
    that is still valid (§10.4: at most two), in one transaction."""
    def list_it(key: TokenKey) -> None:
        previous = [k.key_id for k in usable_keys(db, now) if k.key_id != key.key_id]
        listed = (previous + [key.key_id])[-MAX_TOKEN_KEYS:]
        own.update(db, policy, keys, dataclasses.replace(own.current(db),
                                                         token_keys=tuple(listed)), now)

    return create_key(db, instance_path, policy.token_key_lifetime_ms, now, list_it)


def retire_expired(db: Database, policy: Policy, keys: Sequence[ServerKey], now: int) -> bool:
    """Take expired keys off the chain's list (§10.4), in one transaction; return
    whether there were any."""
    with transaction(db):
        server = own.current(db)
        valid = {key.key_id for key in tokens.valid_keys(db, now)}
        listed = tuple(key_id for key_id in server.token_keys if key_id in valid)
        if listed == server.token_keys:
            return False
        own.update(db, policy, keys, dataclasses.replace(server, token_keys=listed), now)
    return True


class TokenKeyring:
    """One process's token keys, parsed and loaded once: every paid request needs one.

    The http layer keeps one per app; a key id it does not know (a rotation by the
    CLI meanwhile) reloads the rows once."""

    def __init__(self, instance_path: str):
        self.directory = key_dir(instance_path)
        self._keys: dict[bytes, TokenKey] = {}
        self._public: dict[bytes, rsa.RSAPublicKey] = {}
        self._private: dict[bytes, rsa.RSAPrivateKey] = {}
        self._signers: dict[bytes, BlindSigner] = {}

    def find_valid(self, db: Database, key_id: bytes, now: int) -> rsa.RSAPublicKey | None:
        """The public key with this id if it verifies tokens at ``now`` (listed on the
        chain, §10.4, and not expired), else None."""
        if key_id not in self._keys:
            self._keys = {key.key_id: key for key in tokens.all_keys(db)}
        key = self._keys.get(key_id)
        if key is None or now >= key.not_after_ts or key_id not in own.current(db).token_keys:
            return None
        return self.public_key(key)

    def public_key(self, key: TokenKey) -> rsa.RSAPublicKey:
        if key.key_id not in self._public:
            self._public[key.key_id] = parse_spki(key.spki, error=RuntimeError)
        return self._public[key.key_id]

    def private_key(self, key: TokenKey) -> rsa.RSAPrivateKey:
        if key.key_id not in self._private:
            path = os.path.join(self.directory, key.filename)
            with open(path, "rb") as handle:
                loaded = serialization.load_pem_private_key(handle.read(), password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey) or spki(loaded.public_key()) != key.spki:
                raise RuntimeError(f"token key file {path} does not hold key {key.key_id.hex()}")
            self._private[key.key_id] = loaded
        return self._private[key.key_id]

    def signer(self, key: TokenKey) -> BlindSigner:
        """The key prepared for blind signing, once per process rather than per message."""
        if key.key_id not in self._signers:
            self._signers[key.key_id] = BlindSigner.from_private_key(self.private_key(key))
        return self._signers[key.key_id]

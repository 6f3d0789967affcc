"""The server's Ed25519 signing keys (§11), kept in ``<instance>/signing.key``, and
its log key (§8) and witness key (§8.1), each alone in a file of the same format.

The file uses Synapse's format, one key a line: ``ed25519 <version> <b64 seed>``,
written atomically with mode 0600. Which key signs is not the file's to say: the
database's key windows (``storage.signingkeys``) name it, changed in the same
transaction as the chain entry that installs a new key (§11.2), so a reply is
always signed by the key the chain gives its position. A rotation writes the new
seed into the file first (unused until its window exists); every process notices
a changed file and reloads it, so running workers need no restart.
"""

from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass

from typing import Callable

import nacl.signing

from client.protocol.encoding import b64decode, b64encode
from client.protocol.signedjson import KEY_ID, sign_json

from ..storage.files import fsync_directory, write_secret

#: Signs a JSON object as this server (§11), adding it to the object's ``signatures``.
Sign = Callable[[dict], dict]

_VERSION_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class ServerKey:
    key_id: str
    signing_key: nacl.signing.SigningKey

    @property
    def pubkey(self) -> bytes:
        return bytes(self.signing_key.verify_key)


def generate_key() -> ServerKey:
    version = "a_" + "".join(secrets.choice(_VERSION_ALPHABET) for _ in range(4))
    return ServerKey(f"ed25519:{version}", nacl.signing.SigningKey.generate())


def format_keys(keys: list[ServerKey]) -> str:
    return "".join(
        f"ed25519 {key.key_id.split(':', 1)[1]} {b64encode(bytes(key.signing_key))}\n"
        for key in keys
    )


def parse_keys(text: str) -> list[ServerKey]:
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if (len(parts) != 3 or parts[0] != "ed25519"
                or not KEY_ID.fullmatch(f"ed25519:{parts[1]}")):
            raise ValueError(
                f"signing key file, line {number}: expected 'ed25519 <version> <seed>'")
        seed = b64decode(parts[2], f"signing key file, line {number}", length=32, error=ValueError)
        keys.append(ServerKey(f"ed25519:{parts[1]}", nacl.signing.SigningKey(seed)))
    if not keys:
        raise ValueError("signing key file holds no key")
    return keys


def write_keys(path: str, keys: list[ServerKey]) -> None:
    """Replace the key file atomically; the secret never exists with a looser mode."""
    tmp = f"{path}.tmp"
    write_secret(tmp, format_keys(keys).encode())
    os.replace(tmp, path)


def key_file_path(instance_path: str, file_name: str) -> str:
    return os.path.join(instance_path, file_name)


def read_keys(path: str) -> list[ServerKey]:
    with open(path) as handle:
        return parse_keys(handle.read())


#: The log key (§8) is kept in the same file format, as the one key of its file.
LOG_KEY_ID = "ed25519:log"


def write_log_key(path: str, key: nacl.signing.SigningKey) -> None:
    write_keys(path, [ServerKey(LOG_KEY_ID, key)])


def read_log_key(path: str) -> nacl.signing.SigningKey:
    return _read_one(path, LOG_KEY_ID)


#: The witness key (§8.1), the one key of its file too.
WITNESS_KEY_ID = "ed25519:witness"


def witness_key(path: str) -> nacl.signing.SigningKey:
    """The witness key kept in ``path``, made first if the file is missing (by ``init``,
    or in an instance made before witnesses). The new key is written to a private
    file of this process's own, then linked into place: ``os.link`` never replaces a
    file, so of the processes that start together (gunicorn's workers) one makes the
    key and all of them read that one."""
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        write_secret(tmp, format_keys([ServerKey(WITNESS_KEY_ID,
                                                 nacl.signing.SigningKey.generate())]).encode())
        try:
            os.link(tmp, path)
            fsync_directory(os.path.dirname(os.path.abspath(path)))
        except FileExistsError:
            pass
        finally:
            os.remove(tmp)
    return _read_one(path, WITNESS_KEY_ID)


def _read_one(path: str, key_id: str) -> nacl.signing.SigningKey:
    keys = read_keys(path)
    if len(keys) != 1 or keys[0].key_id != key_id:
        raise ValueError(f"{path} must hold exactly one key, "
                         f"'ed25519 {key_id.split(':', 1)[1]} <seed>'")
    return keys[0].signing_key


class KeyFile:
    """The key file as one process sees it: read again whenever it changed on disk
    (a rotation by the CLI), checked by one ``stat`` per use."""

    def __init__(self, path: str):
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._keys: dict[str, ServerKey] = {}

    def keys(self) -> dict[str, ServerKey]:
        info = os.stat(self.path)
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            self._keys = {key.key_id: key for key in read_keys(self.path)}
            self._stamp = stamp
        return self._keys

    def get(self, key_id: str) -> ServerKey:
        key = self.keys().get(key_id)
        if key is None:
            raise RuntimeError(f"signing key {key_id} is not in {self.path}")
        return key


def signer(server_name: str, key: ServerKey) -> Sign:
    """Sign as ``server_name`` with ``key`` (the current one: the file's last)."""
    return lambda obj: sign_json(obj, server_name, key.key_id, key.signing_key)

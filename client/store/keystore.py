"""Private keys at rest: the passphrase-protected keystore and reading the
passphrase (the escrow key's paper backup is ``store.paper``).

The keys are the client's side of §3: Ed25519 ``sigkey``/``sigescrow`` seeds
and X25519 private keys.

Keystore layout
---------------
A directory (mode 0700) with one file per key, ``<name>.key`` (mode 0600 from
creation, written to a temporary ``.*.tmp`` file, fsynced, then moved into
place, so a crash leaves either the old file or the new one). A key name is
1-64 characters of ``[A-Za-z0-9_.-]`` not starting with ``.``. Each file is
one canonical JSON object and a newline::

    {"version": 1,
     "function": "ed25519" | "x25519",
     "kdf": {"alg": "argon2id", "opslimit": 2, "memlimit": 67108864,
             "salt": b64(16 bytes)},
     "check": b64(32 bytes),
     "nonce": b64(24 bytes),
     "ciphertext": b64(secretbox of the plaintext, 16-byte MAC included)}

Base64 is the protocol's (§1: standard, unpadded, canonical). From the
passphrase (UTF-8 of its NFC form, so the same passphrase typed on another
system opens the file) and ``kdf``, ``master = argon2id(32 bytes)``; then
``box key = HMAC-SHA256(master, "keyclient keystore v1 secretbox")`` and
``check = HMAC-SHA256(master, "keyclient keystore v1 passphrase check")``.

``check`` is what tells a wrong passphrase (``WrongPassphrase``) from a damaged
file (``KeystoreCorrupt``): with secretbox alone both are the same MAC failure.
It gives a guesser nothing the ciphertext does not: each guess still costs one
Argon2id. The plaintext is the canonical JSON
``{"function": ..., "key": b64(32-byte seed or scalar), "name": <name>}``, so a
file renamed or swapped with another (say ``sigkey`` and ``sigescrow``) is
``KeystoreCorrupt``, not silently the wrong key.

Every file is self-contained (it carries its own ``kdf``), so files written with
stronger limits, or copied from another store, still open. Derived keys are
cached per (salt, limits) on the ``Keystore`` instance, and new files reuse the
instance's salt, so opening or writing many files costs one Argon2id. The
passphrase is checked against an existing file's ``check`` before the first
write, so a store never mixes passphrases; an empty store accepts any.

The limits default to ``OPSLIMIT_INTERACTIVE``/``MEMLIMIT_INTERACTIVE`` (about
0.1 s, 64 MiB): a store is opened at every CLI command. ``DEFAULT_KDF`` is read
when a ``Keystore`` is made, so tests can monkeypatch it with
``KdfParams.cheapest()``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable

import nacl.exceptions
import nacl.public
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.signing

from ..protocol.encoding import (b64decode, b64encode, canonical_json, parse_json_object,
                                 require_fields, require_int, require_str)
from ..protocol.errors import BadRequest, ClientError
from ..protocol.keys import ED25519, X25519

VERSION = 1
KDF_ALG = "argon2id"
SUFFIX = ".key"
PASSPHRASE_ENV = "KEYCLIENT_PASSPHRASE"
PASSPHRASE_PROMPT = "Keystore passphrase"

#: A planted file must not make the client spend minutes or gigabytes on one KDF.
MAX_OPSLIMIT = 16
MAX_MEMLIMIT = 4 * argon2id.MEMLIMIT_SENSITIVE
#: Key files are a few hundred bytes; anything far larger is not ours.
MAX_FILE_SIZE = 4096

_BOX_LABEL = b"keyclient keystore v1 secretbox"
_CHECK_LABEL = b"keyclient keystore v1 passphrase check"
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
_FILE_FIELDS = frozenset({"version", "function", "kdf", "check", "nonce", "ciphertext"})
_KDF_FIELDS = frozenset({"alg", "opslimit", "memlimit", "salt"})
_PLAIN_FIELDS = frozenset({"function", "key", "name"})
_KEY_TYPES = {ED25519: nacl.signing.SigningKey, X25519: nacl.public.PrivateKey}


class KeystoreError(ClientError):
    """Base of the keystore's errors: the CLI shows the message and exits non-zero."""


class WrongPassphrase(KeystoreError):
    """The passphrase does not open this keystore (or this key file)."""


class KeystoreCorrupt(KeystoreError):
    """A key file is damaged, truncated, tampered with, renamed or not ours."""


class KeyNotFound(KeystoreError):
    """No key of that name in the keystore."""


class KeyExists(KeystoreError):
    """A key of that name exists and overwriting was not asked for."""


class WrongKeyType(KeystoreError):
    """The named key is an X25519 key where an Ed25519 one was asked for, or back."""


@dataclass(frozen=True)
class KdfParams:
    """Argon2id limits, stored in every file so that each file opens with its own."""

    opslimit: int
    memlimit: int

    def __post_init__(self) -> None:
        if not (argon2id.OPSLIMIT_MIN <= self.opslimit <= MAX_OPSLIMIT
                and argon2id.MEMLIMIT_MIN <= self.memlimit <= MAX_MEMLIMIT):
            raise ValueError(f"Argon2id limits out of range: {self}")

    @classmethod
    def cheapest(cls) -> KdfParams:
        """libsodium's minimum limits: for tests only, they protect nothing."""
        return cls(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)


DEFAULT_KDF = KdfParams(argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE)


@dataclass(frozen=True)
class _DerivedKey:
    box: nacl.secret.SecretBox
    check: bytes


@dataclass(frozen=True)
class _Envelope:
    """A key file whose shape and encodings have been checked (not its MAC)."""

    function: str
    kdf: KdfParams
    salt: bytes
    check: bytes
    nonce: bytes
    ciphertext: bytes


def derive_key(passphrase: bytes, salt: bytes, kdf: KdfParams) -> _DerivedKey:
    """The secretbox key and passphrase check for one salt: the one slow step."""
    master = argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt,
                          opslimit=kdf.opslimit, memlimit=kdf.memlimit)
    box_key = hmac.new(master, _BOX_LABEL, hashlib.sha256).digest()
    check = hmac.new(master, _CHECK_LABEL, hashlib.sha256).digest()
    return _DerivedKey(nacl.secret.SecretBox(box_key), check)


def format_key_file(derived: _DerivedKey, salt: bytes, kdf: KdfParams, name: str,
                    function: str, private: bytes) -> bytes:
    """The bytes of one key file (a fresh random nonce each time)."""
    plaintext = canonical_json({"function": function, "key": b64encode(private), "name": name})
    nonce = secrets.token_bytes(nacl.secret.SecretBox.NONCE_SIZE)
    ciphertext = derived.box.encrypt(plaintext, nonce).ciphertext
    return canonical_json({
        "version": VERSION,
        "function": function,
        "kdf": {"alg": KDF_ALG, "opslimit": kdf.opslimit, "memlimit": kdf.memlimit,
                "salt": b64encode(salt)},
        "check": b64encode(derived.check),
        "nonce": b64encode(nonce),
        "ciphertext": b64encode(ciphertext),
    }) + b"\n"


def parse_key_file(data: bytes, what: str) -> _Envelope:
    """Check a key file's shape and encodings strictly; anything off is ``KeystoreCorrupt``."""
    if len(data) > MAX_FILE_SIZE:
        raise KeystoreCorrupt(f"{what}: larger than {MAX_FILE_SIZE} bytes, not a key file")
    try:
        obj = parse_json_object(data)
    except BadRequest as exc:
        raise KeystoreCorrupt(f"{what}: not a key file ({exc})") from None
    require_fields(obj, _FILE_FIELDS, what, error=KeystoreCorrupt)
    if type(obj["version"]) is not int or obj["version"] != VERSION:
        raise KeystoreCorrupt(f"{what}: unsupported version {obj['version']!r}")
    function = obj["function"]
    if function not in _KEY_TYPES:
        raise KeystoreCorrupt(f"{what}: unknown key function {function!r}")
    kdf = require_fields(obj["kdf"], _KDF_FIELDS, f"{what}: kdf", error=KeystoreCorrupt)
    if kdf["alg"] != KDF_ALG:
        raise KeystoreCorrupt(f"{what}: unknown kdf {kdf['alg']!r}")
    opslimit = require_int(kdf["opslimit"], f"{what}: opslimit", error=KeystoreCorrupt)
    memlimit = require_int(kdf["memlimit"], f"{what}: memlimit", error=KeystoreCorrupt)
    try:
        params = KdfParams(opslimit, memlimit)
    except ValueError as exc:
        raise KeystoreCorrupt(f"{what}: {exc}") from None

    def decode(value: Any, field: str, length: int | None = None) -> bytes:
        return b64decode(value, f"{what}: {field}", length=length, error=KeystoreCorrupt)

    ciphertext = decode(obj["ciphertext"], "ciphertext")
    if len(ciphertext) <= nacl.secret.SecretBox.MACBYTES:
        raise KeystoreCorrupt(f"{what}: ciphertext too short")
    return _Envelope(function, params, decode(kdf["salt"], "salt", argon2id.SALTBYTES),
                     decode(obj["check"], "check", 32),
                     decode(obj["nonce"], "nonce", nacl.secret.SecretBox.NONCE_SIZE),
                     ciphertext)


def open_key_file(envelope: _Envelope, derived: _DerivedKey, name: str, what: str) -> bytes:
    """Decrypt a checked envelope with the key its ``check`` accepted; return the
    32 private key bytes, bound to ``name`` and the envelope's function."""
    if not hmac.compare_digest(derived.check, envelope.check):
        raise WrongPassphrase(f"{what}: wrong passphrase for this keystore")
    try:
        plaintext = derived.box.decrypt(envelope.ciphertext, envelope.nonce)
    except nacl.exceptions.CryptoError:
        raise KeystoreCorrupt(f"{what}: the ciphertext was altered or truncated") from None
    try:
        plain = require_fields(json.loads(plaintext), _PLAIN_FIELDS, what, error=KeystoreCorrupt)
    except (ValueError, RecursionError):
        raise KeystoreCorrupt(f"{what}: decrypted content is not JSON") from None
    if plain["function"] != envelope.function or require_str(
            plain["name"], f"{what}: name", error=KeystoreCorrupt) != name:
        raise KeystoreCorrupt(f"{what}: holds key {plain['name']!r} ({plain['function']}), "
                              "so the file was renamed or swapped")
    return b64decode(plain["key"], f"{what}: key", length=32, error=KeystoreCorrupt)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KeystoreError(f"{name!r} is not a key name: use 1-64 of A-Z a-z 0-9 _ . -, "
                            "not starting with '.'")
    return name


class Keystore:
    """Named Ed25519 and X25519 private keys in a directory, each file encrypted
    under the passphrase. See the module docstring for the format."""

    def __init__(self, path: str, passphrase: str, kdf: KdfParams | None = None):
        if not passphrase:
            raise KeystoreError("the keystore passphrase must not be empty")
        self.path = os.path.abspath(path)
        self.kdf = kdf if kdf is not None else DEFAULT_KDF
        self._passphrase = unicodedata.normalize("NFC", passphrase).encode("utf-8")
        self._derived: dict[tuple[bytes, KdfParams], _DerivedKey] = {}
        self._salt: bytes | None = None  # for new files, fixed once the passphrase is checked
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        if os.stat(self.path).st_mode & 0o077:  # the folder is ours alone
            os.chmod(self.path, 0o700)

    def _file(self, name: str) -> str:
        return os.path.join(self.path, _check_name(name) + SUFFIX)

    def _derive(self, salt: bytes, kdf: KdfParams) -> _DerivedKey:
        derived = self._derived.get((salt, kdf))
        if derived is None:
            derived = self._derived[(salt, kdf)] = derive_key(self._passphrase, salt, kdf)
        return derived

    def _read(self, name: str) -> tuple[str, bytes]:
        path = self._file(name)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_SIZE + 1)
        except FileNotFoundError:
            raise KeyNotFound(f"no key named {name!r} in {self.path}") from None
        envelope = parse_key_file(data, path)
        derived = self._derive(envelope.salt, envelope.kdf)
        return envelope.function, open_key_file(envelope, derived, name, path)

    def names(self) -> list[str]:
        """The stored key names, sorted (temporary files are not keys)."""
        return sorted(entry[:-len(SUFFIX)] for entry in os.listdir(self.path)
                      if entry.endswith(SUFFIX) and _NAME.fullmatch(entry[:-len(SUFFIX)]))

    def check_passphrase(self) -> None:
        """Raise ``WrongPassphrase`` unless the passphrase opens the store's first
        readable key file; an empty store accepts any passphrase. Run before the
        first write, so that one store never holds two passphrases."""
        for name in self.names():
            path = self._file(name)
            try:
                with open(path, "rb") as f:
                    envelope = parse_key_file(f.read(MAX_FILE_SIZE + 1), path)
            except (FileNotFoundError, KeystoreCorrupt):
                continue  # deleted meanwhile, or damaged: it will say so when read
            derived = self._derive(envelope.salt, envelope.kdf)
            if not hmac.compare_digest(derived.check, envelope.check):
                raise WrongPassphrase(f"wrong passphrase for the keystore {self.path}")
            if envelope.kdf == self.kdf and self._salt is None:
                self._salt = envelope.salt  # its key is derived already: reuse it
            return

    def _put(self, name: str, function: str, private: bytes, overwrite: bool) -> None:
        path = self._file(name)
        if self._salt is None:
            self.check_passphrase()
            if self._salt is None:
                self._salt = secrets.token_bytes(argon2id.SALTBYTES)
        data = format_key_file(self._derive(self._salt, self.kdf), self._salt, self.kdf,
                               name, function, private)
        # mkstemp creates the file 0600 with O_EXCL: never looser, never a symlink.
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if overwrite:
                os.replace(tmp, path)
            else:  # link refuses an existing target: no check-then-write race
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise KeyExists(f"a key named {name!r} exists in {self.path}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_directory(self.path)

    def _get(self, name: str, function: str) -> bytes:
        stored, private = self._read(name)
        if stored != function:
            raise WrongKeyType(f"key {name!r} is an {stored} key, not {function}")
        return private

    def put_signing_key(self, name: str, key: nacl.signing.SigningKey, *,
                        overwrite: bool = False) -> None:
        """Store an Ed25519 key (its 32-byte seed); ``KeyExists`` unless ``overwrite``."""
        self._put(name, ED25519, bytes(key), overwrite)

    def get_signing_key(self, name: str) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self._get(name, ED25519))

    def put_private_key(self, name: str, key: nacl.public.PrivateKey, *,
                        overwrite: bool = False) -> None:
        """Store an X25519 private key; ``KeyExists`` unless ``overwrite``."""
        self._put(name, X25519, bytes(key), overwrite)

    def get_private_key(self, name: str) -> nacl.public.PrivateKey:
        return nacl.public.PrivateKey(self._get(name, X25519))

    def remove_leftovers(self) -> None:
        """Remove the temporary files of a write or delete that was stopped halfway (a
        signal, a crash), zeroed first like a deleted key. Only for a caller that
        knows no other process writes the store now (the CLI holds the home's lock)."""
        for entry in os.listdir(self.path):
            if entry.startswith(".") and entry.endswith(".tmp"):
                leftover = os.path.join(self.path, entry)
                with contextlib.suppress(FileNotFoundError):
                    fd = os.open(leftover, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
                    try:
                        os.write(fd, b"\0" * os.fstat(fd).st_size)
                    finally:
                        os.close(fd)
                    os.unlink(leftover)

    def delete(self, name: str) -> None:
        """Overwrite the file with zeros, then remove it. (On SSDs and copy-on-write
        file systems the old blocks may survive; the ciphertext still needs the
        passphrase.) No passphrase check: whoever can write the folder can delete.

        The file is first renamed to a temporary name, in one step: a delete stopped
        halfway (a signal) leaves the key or no key, never zeros under its name."""
        path = self._file(name)
        doomed = os.path.join(self.path, f".{name}.{secrets.token_hex(4)}.deleted.tmp")
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            raise KeyNotFound(f"no key named {name!r} in {self.path}") from None
        fd = os.open(doomed, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.write(fd, b"\0" * os.fstat(fd).st_size)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(doomed)
        _fsync_directory(self.path)


# --- The passphrase ------------------------------------------------------------------

#: A new keystore's passphrase is at least this long: it alone protects the keys on
#: disk. (Stores made before keep theirs.)
MIN_PASSPHRASE_LENGTH = 8
#: Passphrases a person may type before the command gives up.
PASSPHRASE_TRIES = 3


def open_keystore(path: str, ask: Callable[[bool], str],
                  tell: Callable[[str], None]) -> Keystore:
    """The keystore in ``path`` with its passphrase checked before any use, and the
    leftovers of a command stopped halfway removed (the caller holds the home's lock).

    The passphrase is ``$KEYCLIENT_PASSPHRASE`` when set (scripts, tests: one try),
    else ``ask(confirm)``'s answer, up to ``PASSPHRASE_TRIES`` times; ``confirm`` is
    true for a new store, where a typo would lock the keys away. ``tell`` says why an
    answer was not taken (empty, too short for a new store, wrong) before asking
    again."""
    new = not os.path.isdir(path) or not os.listdir(path)
    from_env = os.environ.get(PASSPHRASE_ENV)
    for tries_left in range(PASSPHRASE_TRIES - 1, -1, -1):
        passphrase = from_env if from_env is not None else ask(new)
        problem = _passphrase_problem(passphrase, new)
        if problem is None:
            keystore = Keystore(path, passphrase)
            try:
                keystore.check_passphrase()
                keystore.remove_leftovers()
                return keystore
            except WrongPassphrase:
                problem = "wrong passphrase"
        if from_env is not None:
            raise WrongPassphrase(f"${PASSPHRASE_ENV}: {problem} for the keystore {path}")
        if tries_left:
            tell(f"{problem}: try again ({tries_left} {'tries' if tries_left > 1 else 'try'}"
                 " left)")
    raise WrongPassphrase(f"{problem} for the keystore {path} ({PASSPHRASE_TRIES} tries); "
                          "nothing was changed")


def _passphrase_problem(passphrase: str, new: bool) -> str | None:
    if not passphrase:
        return "the passphrase is empty"
    if new and len(passphrase) < MIN_PASSPHRASE_LENGTH:
        return (f"a new keystore's passphrase needs at least {MIN_PASSPHRASE_LENGTH} "
                "characters (it alone protects your keys on disk)")
    return None


def _fsync_directory(path: str) -> None:
    """Make the files created, renamed or removed in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Files that hold secrets, and renames that must survive a crash: the server's
signing key (§11), its token keys (§10), and the instance folder around them, whose
database holds the private indexes (§6), voucher hashes and spent tokens."""

from __future__ import annotations

import contextlib
import os
import stat


def write_secret(path: str, data: bytes) -> None:
    """Create or replace ``path`` with ``data``, fsynced; the file is 0600 from its
    creation, so the secret never exists with a looser mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_directory(path: str) -> None:
    """Make the files created, renamed or removed in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def keep_private(path: str) -> None:
    """Make the regular file ``path`` 0600 if it exists and group or others may use it.

    A file of another user is left as its owner made it (only the owner may change
    its mode)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode) and mode & 0o077:
        with contextlib.suppress(PermissionError):
            os.chmod(path, 0o600)


def make_private(folder: str) -> None:
    """``folder`` and every folder in it 0700, every regular file in it 0600, whatever
    their modes were (symbolic links are not followed)."""
    os.chmod(folder, 0o700)
    for parent, folders, names in os.walk(folder):
        for name in folders + names:
            path = os.path.join(parent, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISDIR(mode):
                os.chmod(path, 0o700)
            elif stat.S_ISREG(mode):
                os.chmod(path, 0o600)

"""Files that hold secrets, and renames that must survive a crash: the server's
signing key (§11) and its token keys (§10)."""

from __future__ import annotations

import os


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

"""The largest tree size the log ever published, kept outside the database.

A log must never shrink once published (§8): a checkpoint of size N, once served,
binds the server to every entry below N. The database cannot be its own witness
of that, since a restored backup brings back an older database, so the worker
writes the size of each checkpoint it makes to ``published_size`` in the instance
folder, atomically and only ever upward, after the checkpoint commits. A server
whose chain is shorter than that size refuses to serve (``instance.check_published``).
"""

from __future__ import annotations

import contextlib
import os
import threading

from .files import fsync_directory

FILE = "published_size"

_guard = threading.Lock()


def path_in(folder: str) -> str:
    return os.path.join(folder, FILE)


def read(folder: str) -> int | None:
    """The size recorded in ``folder`` (None: none recorded)."""
    try:
        with open(path_in(folder), encoding="ascii") as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        return None
    if not text.isdigit():
        raise ValueError(f"{path_in(folder)} does not hold a tree size: {text[:40]!r}")
    return int(text)


def record(folder: str, size: int) -> int:
    """Make the recorded size at least ``size`` (never lower it); return it. The file
    is replaced by a rename of a fsynced temporary file, so a crash leaves the old
    size or the new one."""
    with _guard:
        current = read(folder)
        if current is not None and current >= size:
            return current
        temporary = path_in(folder) + f".{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(f"{size}\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path_in(folder))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)
            raise
        fsync_directory(folder)
        return size


def database_folder(conn) -> str | None:
    """The folder of the main database file of ``conn`` (None: in memory)."""
    for _seq, name, file in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return os.path.dirname(file) if file else None
    return None

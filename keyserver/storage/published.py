"""The largest tree size the log ever published, kept outside the database.

A log must never shrink once published (§8): a checkpoint of size N, once served,
binds the server to every entry below N. The database cannot be its own witness
of that, since a restored backup brings back an older database, so the worker
writes the size of each checkpoint it makes to ``published_size`` in the instance
folder, atomically and only ever upward, after the checkpoint commits. A server
whose chain is shorter than that size refuses to serve (``instance.check_published``).

The one way down is the operator's: ``keyserver restore --accept-shorter-log`` gives
a restored instance the size of the chain it holds, and appends the decision to
``published_shrinks`` (one JSON object a line, never rewritten, copied by backups), so
that the instance keeps the record of every size it gave up.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time

from .files import fsync_directory

FILE = "published_size"
SHRINKS = "published_shrinks"

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


def record_shrink(folder: str, published_size: int, length: int, source: str) -> None:
    """Append the operator's decision to serve a log of ``length`` entries although it
    published a tree of ``published_size`` (restored from ``source``) to ``SHRINKS``,
    fsynced before the caller records the lower size."""
    line = json.dumps({"decided": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "published_size": published_size, "restored_length": length,
                       "restored_from": source})
    fd = os.open(os.path.join(folder, SHRINKS), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    fsync_directory(folder)


def database_folder(conn) -> str | None:
    """The folder of the main database file of ``conn`` (None: in memory)."""
    for _seq, name, file in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return os.path.dirname(file) if file else None
    return None

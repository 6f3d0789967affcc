"""The database's write lock held from outside the server, as a stuck writer would
hold it: shared by tests/test_e2e_bounded_waits.py and ``scripts/bench lock``."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def write_lock_held(instance: Path) -> Iterator[None]:
    """What a writer holds while it writes: the lock file's flock, then SQLite's lock
    (``BEGIN IMMEDIATE``), until the block ends."""
    database = str(instance / "keyserver.sqlite")
    fd = os.open(f"{database}.lock", os.O_RDWR)
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

"""One ``keyclient`` command at a time per home: an exclusive ``flock`` on
``<home>/lock``, held for the whole command.

Two commands on one home would otherwise both append to a chain from the same
verified length and each find the other's entries where it expected its own: a
local race that looks exactly like a server's fork. A second command waits (it is
told so once) and gives up after a timeout with a message saying which process
holds the home. The kernel drops the lock when its holder exits, however it
exits, so a crashed command never leaves the home locked.
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import Callable

from ..protocol.errors import ClientError

#: How often a waiting command tries the lock again.
POLL_SECONDS = 0.05


class HomeBusy(ClientError):
    """Another command held the home for longer than this one would wait."""


class HomeLock:
    """The lock of the home at ``path`` (the folder must exist)."""

    def __init__(self, path: str):
        self.path = os.path.join(path, "lock")
        self._fd: int | None = None

    def holder(self) -> str:
        """The process id the holder wrote into the lock file ("" if unknown)."""
        try:
            with open(self.path, encoding="ascii", errors="replace") as handle:
                return handle.read(20).strip()
        except OSError:
            return ""

    def acquire(self, timeout: float, waiting: Callable[[str], None] = lambda holder: None,
                ) -> None:
        """Take the lock; if another process holds it, call ``waiting`` (with that
        process's id) once and try again until ``timeout`` seconds have passed, then
        raise ``HomeBusy``."""
        assert self._fd is None, "the home is locked already"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = None
            while not _try_lock(fd):
                if deadline is None:
                    deadline = time.monotonic() + timeout
                    waiting(self.holder())
                if time.monotonic() >= deadline:
                    holder = self.holder()
                    raise HomeBusy(
                        f"another keyclient command{f' (process {holder})' if holder else ''}"
                        f" is still using {os.path.dirname(self.path)} after {timeout:g} s:"
                        " try again when it has finished (--wait sets how long to wait)")
                time.sleep(POLL_SECONDS)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)   # also for the copies a forked worker holds
            os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True

"""The server's one clock: ``client.protocol`` never reads the time, so the server
reads it here and passes it down."""

from __future__ import annotations

import time


def now_ms() -> int:
    """The current time in protocol units (ms since the epoch); freezegun patches it.

    Rounded, not truncated: ``time.time()`` is a float, and truncation would turn a
    frozen ``...001`` ms into ``...000``."""
    return round(time.time() * 1000)

"""In-process sliding-window rate limits (§9: fetching is free and consumes, so the
operator may limit it per sigkeyhash and per client address).

The counts live in the memory of one worker process: under gunicorn ``-w N`` a
client can get up to N times the configured rate. That is enough to blunt someone
draining an identity's KeyInits without a shared store on the hot path.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable

WINDOW_MS = 60_000


class SlidingWindow:
    """At most ``limit`` events per key in any ``window_ms`` (``limit`` 0: unlimited).

    Only events it lets through count, so a refused request does not extend the wait.
    Keys whose events have all left the window are dropped once per window, so
    memory is bounded by the keys seen in the last two windows.
    """

    def __init__(self, limit: int, window_ms: int = WINDOW_MS):
        self.limit, self.window_ms = limit, window_ms
        self._events: dict[Hashable, deque[int]] = {}
        self._lock = threading.Lock()
        self._swept_ms = 0

    def acquire(self, key: Hashable, now_ms: int) -> bool:
        """Count an event for ``key`` at ``now_ms`` if under the limit; False if over it."""
        if self.limit == 0:
            return True
        start = now_ms - self.window_ms
        with self._lock:
            if now_ms - self._swept_ms >= self.window_ms:
                self._events = {k: q for k, q in self._events.items() if q[-1] > start}
                self._swept_ms = now_ms
            events = self._events.setdefault(key, deque())
            while events and events[0] <= start:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now_ms)
            return True

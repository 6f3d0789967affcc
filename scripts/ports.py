"""A free local port for the servers that scripts/bench and scripts/demo start
(imported from their folder, which is first on ``sys.path`` when they run)."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

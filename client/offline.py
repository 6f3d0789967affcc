"""Working without the server (``keyclient lookup --offline``, ``verify --offline``):
the chain as this home last verified it, and the server's signed replies the home
holds (every reply it ever fetched was held once its signature checked).

Nothing is fetched: a session that would need to reach the server fails with
``NotHeld`` instead. Offline is only ever what the user asks for: a command that
cannot reach the server fails and suggests ``--offline`` (a server kept
unreachable must not freeze a client on old keys without it knowing).
"""

from __future__ import annotations

from typing import Callable, Collection

from .protocol.errors import ClientError
from .protocol.wire import UIDMessageReply
from .session import ServerSession
from .store.home import Home
from .transport.fetcher import Fetcher, Request, Response


class NotHeld(ClientError):
    """Offline, a reply the command needs is not in the home."""


class OfflineFetcher(Fetcher):
    """Sends nothing."""

    def _fetch(self, request: Request, max_length: int) -> Response:
        raise NotHeld(f"offline: {request.method} {request.url} is not sent")


class OfflineSession(ServerSession):
    """A ``ServerSession`` on what ``home`` verified and holds of ``server``."""

    def __init__(self, home: Home, server: str, url: str,
                 progress: Callable[[str], None] = lambda step: None):
        super().__init__(home, server, url, progress, fetcher=OfflineFetcher())
        if not self.chain.length:
            raise NotHeld(f"nothing of {server} is verified here yet: run 'keyclient sync'"
                          " while the server is reachable")

    def replies(self, positions: Collection[int]) -> dict[int, UIDMessageReply]:
        """The held reply of each of ``positions`` (all of them, or ``NotHeld``)."""
        held = self.home.held_at(self.server, positions)
        missing = sorted(set(positions) - held.keys())
        if missing:
            raise NotHeld(f"offline, and the server's replies for positions "
                          f"{', '.join(map(str, missing[:5]))}{'...' if len(missing) > 5 else ''}"
                          f" are not kept here: look this up once while {self.server} is "
                          "reachable")
        return held

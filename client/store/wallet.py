"""The client's token wallet (§10): keep tokens (bought by blind issuance through
the session, ``session.ServerSession.buy_tokens``, or added), and spend exactly
one per paid call.

A token is taken out (``reserved``) for the duration of a call. The server
spends a token only when the write commits, so after a 4xx answer the token
goes back, except after ``TOKEN_SPENT`` or ``TOKEN_INVALID``. When no answer
arrived at all, or a 5xx (perhaps a gateway's, after the server committed), the
write may or may not have happened: the token is kept as
``unknown`` and used only once no ``available`` one is left (the server then
says ``TOKEN_SPENT`` if it was).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Collection, Iterable, Iterator

from ..clock import now_ms
from ..protocol.errors import ClientError, ProtocolError, VerificationError
from ..protocol.tokens import format_authorization, parse_token

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token BLOB PRIMARY KEY,
    server TEXT NOT NULL,
    key_id BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('available', 'reserved', 'unknown', 'spent',
                                          'invalid')),
    added_ts INTEGER NOT NULL
)
"""


NO_TOKENS = ("no tokens for {server} left: buy some with a voucher ('keyclient tokens buy') "
             "or add them ('keyclient tokens add')")
UNLISTED = ("; {count} token(s) of yours are under keys that {server} no longer lists on its "
            "chain, so it no longer redeems them")


class NoTokens(ClientError):
    """The wallet holds no usable token for this server: buy or add some."""


class Wallet:
    """Tokens per server name, in an SQLite file (created with mode 0600)."""

    def __init__(self, path: str):
        if not os.path.exists(path):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute(SCHEMA)
        # A process that died mid-call leaves tokens reserved: their fate is unknown.
        self.db.execute("UPDATE tokens SET state = 'unknown' WHERE state = 'reserved'")

    def close(self) -> None:
        self.db.close()

    def add(self, server: str, tokens: Iterable[bytes]) -> int:
        """Store tokens (checked for form, not for validity); return how many were new."""
        added = 0
        for raw in tokens:
            token = parse_token(raw)
            added += self.db.execute(
                "INSERT OR IGNORE INTO tokens (token, server, key_id, state, added_ts)"
                " VALUES (?, ?, ?, 'available', ?)",
                (raw, server, token.key_id, now_ms())).rowcount
        return added

    def require(self, server: str, keys: Collection[bytes]) -> None:
        """Raise ``NoTokens`` unless a token for ``server`` under one of ``keys`` (those
        its chain lists, §10.4) can be spent: checked before work that would be
        wasted without one."""
        if self._usable(server, keys) is None:
            raise self._none_left(server, keys)

    def _usable(self, server: str, keys: Collection[bytes]) -> bytes | None:
        """The token to spend next: an ``available`` one before an ``unknown`` one,
        the oldest first, under one of ``keys`` only."""
        marks = ", ".join("?" * len(keys))
        row = self.db.execute(
            "SELECT token FROM tokens WHERE server = ? AND state IN ('available', 'unknown')"
            f" AND key_id IN ({marks}) ORDER BY state = 'unknown', added_ts, rowid LIMIT 1",
            (server, *keys)).fetchone()
        return None if row is None else row[0]

    def _none_left(self, server: str, keys: Collection[bytes]) -> NoTokens:
        marks = ", ".join("?" * len(keys))
        [unlisted] = self.db.execute(
            "SELECT count(*) FROM tokens WHERE server = ? AND state IN ('available', 'unknown')"
            f" AND key_id NOT IN ({marks})", (server, *keys)).fetchone()
        return NoTokens(NO_TOKENS.format(server=server)
                        + (UNLISTED.format(count=unlisted, server=server) if unlisted else ""))

    def count(self, server: str) -> dict[str, int]:
        return dict(self.db.execute(
            "SELECT state, count(*) FROM tokens WHERE server = ? GROUP BY state", (server,)))

    def _take(self, server: str, keys: Collection[bytes]) -> bytes:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            token = self._usable(server, keys)
            if token is None:
                raise self._none_left(server, keys)
            self.db.execute("UPDATE tokens SET state = 'reserved' WHERE token = ?", (token,))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return token

    def _mark(self, token: bytes, state: str) -> None:
        self.db.execute("UPDATE tokens SET state = ? WHERE token = ?", (state, token))

    @contextlib.contextmanager
    def spend(self, server: str, keys: Collection[bytes]) -> Iterator[str]:
        """Yield an ``Authorization`` header value paying with one token under one of
        ``keys`` (§10.4: those the server's chain lists); settle the token by how the
        call ended. An answer that does not verify came with a 2xx status: the server
        committed the write and spent the token."""
        token = self._take(server, keys)
        try:
            yield format_authorization(token)
        except VerificationError:
            self._mark(token, "spent")
            raise
        except ProtocolError as exc:
            outcome = {"TOKEN_SPENT": "spent", "TOKEN_INVALID": "invalid"}
            self._mark(token, outcome.get(exc.errcode, "available") if exc.refused
                       else "unknown")
            raise
        except BaseException:
            self._mark(token, "unknown")
            raise
        self._mark(token, "spent")

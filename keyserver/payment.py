"""Payment for writes (§10.2): the one hook every paid operation calls.

``charger`` checks the request's token eagerly (parsing and the RSA-PSS
verification happen before the write lock), and the charge function it returns
runs inside the write's transaction at the token step of the order of checks
(§4.2.1): it raises the token's error there, or records the token as spent.
The spend commits with the write or not at all: a failed write spends nothing,
and the spent table's primary key lets a token be spent exactly once.
"""

from __future__ import annotations

import sqlite3
from typing import Callable

from flask import current_app

from .clock import now_ms
from client.protocol.errors import ProtocolError, TokenRequired, TokenSpent
from client.protocol.tokens import (check_token, format_www_authenticate, parse_authorization,
                           parse_token, spend_id, token_challenge)

from . import tokenkeys
from .db import Database, get_db

OPERATIONS = ("create_uid", "update_uid", "add_keyinit")


def price(operation: str) -> int:
    assert operation in OPERATIONS, operation
    return current_app.config["TOKEN_PRICES"][operation]


def challenge() -> bytes:
    return token_challenge(current_app.config["KEYSERVER_NAME"])


def _verify(authorization: str | None, now: int) -> bytes | ProtocolError:
    """The token's spend id, or the error to answer if the operation is paid."""
    try:
        raw = parse_authorization(authorization)
        if raw is None:
            return TokenRequired("this operation costs a token: send "
                                 'Authorization: PrivateToken token="..."')
        token = parse_token(raw)
        key = tokenkeys.find_valid(get_db(), token.key_id, now)
        check_token(token, challenge=challenge(), keys={token.key_id: key} if key else {})
    except ProtocolError as exc:
        return exc
    return spend_id(token)


def charger(authorization: str | None,
            now: int | None = None) -> Callable[[Database, str], None]:
    """The charge function for one request with this ``Authorization`` header."""
    now = now_ms() if now is None else now
    verdict = _verify(authorization, now)

    def charge(db: Database, operation: str) -> None:
        """Spend the request's token on ``operation``, unless the operator made it free."""
        if price(operation) == 0:
            return
        if isinstance(verdict, ProtocolError):
            raise verdict
        try:
            db.conn.execute("INSERT INTO spent_tokens (spend_id) VALUES (?)", (verdict,))
        except sqlite3.IntegrityError:
            raise TokenSpent("this token has already been spent") from None

    return charge


def www_authenticate() -> str | None:
    """The challenge a 401 carries (§10.2), naming the key that issues tokens now."""
    key = tokenkeys.issuing_key(get_db(), now_ms())
    return format_www_authenticate(challenge(), key.spki) if key else None

"""Payment for writes (§10.2): the one hook every paid operation calls.

``charger`` checks the request's token eagerly (parsing and the RSA-PSS
verification happen before the write lock), and the ``Charge`` it returns runs
inside the write's transaction at the token step of the order of checks (§4.2.1):
it raises the token's error there, or records the token as spent. Its ``check``
gives an absent or invalid token's error earlier, before the costly checks.
The spend commits with the write or not at all: a failed write spends nothing,
and the spent table's primary key lets a token be spent exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from client.protocol.errors import ProtocolError, TokenRequired, TokenSpent
from client.protocol.tokens import (check_token, format_www_authenticate, parse_authorization,
                                    parse_token, spend_id, token_challenge)

from ..storage import tokens
from ..storage.db import Database
from .policy import Policy
from .tokenkeys import TokenKeyring, issuing_key

OPERATIONS = ("create_uid", "update_uid", "add_keyinit")


@dataclass(frozen=True)
class Charge:
    """One request's payment: the verdict on its token, reached before the write, and
    the spend, inside it."""

    #: The token's spend id, or the error to answer if the operation is priced.
    verdict: bytes | ProtocolError
    prices: Mapping[str, int]

    def check(self, operation: str) -> None:
        """Raise the token's error now if ``operation`` is priced and the token is absent
        or invalid. That answer needs no stored state (§4.2.1 puts the token before every
        state check), so services call this before their costly verification, and a
        request without a valid token costs no signature checks."""
        assert operation in OPERATIONS, operation
        if self.prices[operation] and isinstance(self.verdict, ProtocolError):
            raise self.verdict

    def __call__(self, db: Database, operation: str) -> None:
        """Inside the write transaction, at the token step: spend the request's token on
        ``operation`` (unless the operator made it free); the spend commits with the write."""
        self.check(operation)
        if self.prices[operation] == 0:
            return
        assert isinstance(self.verdict, bytes), "check raises a refused token's error"
        if not tokens.spend(db, self.verdict):
            raise TokenSpent("this token has already been spent")


def challenge(policy: Policy) -> bytes:
    return token_challenge(policy.server_name)


def _verify(db: Database, keyring: TokenKeyring, policy: Policy, authorization: str | None,
            now: int) -> bytes | ProtocolError:
    """The token's spend id, or the error to answer if the operation is paid."""
    try:
        raw = parse_authorization(authorization)
        if raw is None:
            return TokenRequired("this operation costs a token: send "
                                 'Authorization: PrivateToken token="..."')
        token = parse_token(raw)
        key = keyring.find_valid(db, token.key_id, now)
        check_token(token, challenge=challenge(policy), keys={token.key_id: key} if key else {})
    except ProtocolError as exc:
        return exc
    return spend_id(token)


def charger(db: Database, keyring: TokenKeyring, policy: Policy, authorization: str | None,
            now: int) -> Charge:
    """The charge for one request with this ``Authorization`` header, at the
    request's ``now`` (a paid write reads the clock once)."""
    return Charge(_verify(db, keyring, policy, authorization, now), policy.token_prices)


def www_authenticate(db: Database, policy: Policy, now: int) -> str | None:
    """The challenge a 401 carries (§10.2), naming the key that issues tokens now."""
    key = issuing_key(db, now)
    return format_www_authenticate(challenge(policy), key.spki) if key else None

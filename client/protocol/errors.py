"""Errors of the protocol (§12) and of the client.

Every spec errcode has one ``ProtocolError`` subclass carrying it as a class
attribute, so rules raise e.g. ``IdentityTaken`` and the server maps the class
to an HTTP status in one table. The client raises the same classes when a
server answers with that errcode, plus ``TransportError`` (the bytes did not
arrive) and ``VerificationError`` (they arrived but must not be trusted).
"""

from __future__ import annotations


class ProtocolError(Exception):
    """A request broke a rule of the protocol; ``errcode`` names which."""

    errcode = "BAD_REQUEST"

    def __init__(self, message: str, *, status: int | None = None, request: str | None = None):
        super().__init__(message)
        self.message = message
        #: HTTP status when the error came from a server's answer; raised by the server,
        #: the status to answer with when not the errcode's (§8.1's 403 and 422).
        self.status = status
        #: The request it answered ("POST <url>"): a detail for whoever debugs, kept
        #: out of the message a user reads.
        self.request = request

    @property
    def refused(self) -> bool:
        """Whether nothing changed on the server: the error is the client's own, or the
        server answered 4xx. After any other answer a write may have committed: a 5xx
        (the server's, or a gateway's that may have passed the request on), a 3xx (the
        client follows no redirect, and a redirect says nothing of what was done before
        it) or a final 1xx; its outcome is unknown."""
        return self.status is None or 400 <= self.status < 500


class BadRequest(ProtocolError):
    errcode = "BAD_REQUEST"


class InvalidMessage(ProtocolError):
    errcode = "INVALID_MESSAGE"


class InvalidIdentity(ProtocolError):
    errcode = "INVALID_IDENTITY"


class InvalidSignature(ProtocolError):
    errcode = "INVALID_SIGNATURE"


class StaleLastentry(ProtocolError):
    errcode = "STALE_LASTENTRY"


class InvalidValidity(ProtocolError):
    errcode = "INVALID_VALIDITY"


class TokenRequired(ProtocolError):
    errcode = "TOKEN_REQUIRED"


class TokenInvalid(ProtocolError):
    errcode = "TOKEN_INVALID"


class TokenSpent(ProtocolError):
    errcode = "TOKEN_SPENT"


class DomainNotServed(ProtocolError):
    errcode = "DOMAIN_NOT_SERVED"


class ReservedIdentity(ProtocolError):
    errcode = "RESERVED_IDENTITY"


class VoucherInvalid(ProtocolError):
    errcode = "VOUCHER_INVALID"


class NotFound(ProtocolError):
    errcode = "NOT_FOUND"


class NoKeyinit(ProtocolError):
    errcode = "NO_KEYINIT"


class IdentityTaken(ProtocolError):
    errcode = "IDENTITY_TAKEN"


class MsgcountMismatch(ProtocolError):
    errcode = "MSGCOUNT_MISMATCH"


class KeyInUse(ProtocolError):
    errcode = "KEY_IN_USE"


class KeyinitLimit(ProtocolError):
    errcode = "KEYINIT_LIMIT"


class TooLarge(ProtocolError):
    errcode = "TOO_LARGE"


class RateLimited(ProtocolError):
    errcode = "RATE_LIMITED"


class Unavailable(ProtocolError):
    errcode = "UNAVAILABLE"


#: errcode -> class, for turning a server's answer back into a typed exception.
BY_ERRCODE: dict[str, type[ProtocolError]] = {
    cls.errcode: cls for cls in ProtocolError.__subclasses__()
}


class ClientError(Exception):
    """Base of the errors that only a client raises."""


class TransportError(ClientError):
    """The answer did not arrive whole: network, timeout, size limit, unparseable reply."""


class Unreachable(TransportError):
    """No connection to the server could be made (refused, no route, a name that
    does not resolve, no answer in time)."""


class VerificationError(ClientError):
    """Data from a server failed verification (chain link, signature, key validity).

    Never retried silently, and nothing it concerns is stored.
    """

    def __init__(self, message: str, *, position: int | None = None):
        super().__init__(message)
        #: Chain position of the first bad entry, when the failure is in the chain.
        self.position = position


class ChainError(VerificationError):
    """A hashchain entry is malformed or does not link to its predecessor."""

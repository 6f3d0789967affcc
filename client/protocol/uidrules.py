"""The acceptance rules of UIDMessages (§4), shared by the server (which applies
them to a request) and the client (which re-applies them to every message it
finds on the chain, §7.3). Pure functions: parsed messages and ``now_ms`` in,
return or raise the errcode's ``ProtocolError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence

from .errors import (DomainNotServed, IdentityTaken, InvalidIdentity, InvalidMessage,
                     InvalidSignature, InvalidValidity, MsgcountMismatch, ReservedIdentity,
                     StaleLastentry, VerificationError)
from .identity import parse_identity
from .keys import KeyEntry, verify_detached
from .uidmessage import UIDMessage


DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Limits:
    """A server's limits (§12 capabilities' ``limits``), one object for both sides.

    The first three are the time limits of §4 that the rules here apply; the others
    default to the spec's defaults, so that a caller which only applies the rules
    can name those three alone."""

    max_uid_lifetime_ms: int
    reclaim_grace_ms: int
    lastentry_max_age_ms: int
    max_chunk: int = 10000
    max_keyinit_lifetime_ms: int = 30 * DAY_MS
    max_keyinits_per_identity: int = 100
    max_keyinits_per_request: int = 50
    max_request_bytes: int = 256 * 1024


@dataclass(frozen=True)
class Latest:
    """What the rules need of an identity's latest accepted UIDMessage (``L``)."""

    msgcount: int
    sigkey: KeyEntry
    sigescrow: KeyEntry | None
    not_before_ts: int
    not_after_ts: int

    @classmethod
    def of(cls, message: UIDMessage) -> "Latest":
        return cls(message.msgcount, message.sigkey, message.sigescrow,
                   message.not_before_ts, message.not_after_ts)


def check_preferences(message: UIDMessage, allowed_mixaddresses: Collection[str]) -> None:
    """mixaddress/nymaddress only with forwardsec "optional", and only allowed mixaddresses.

    Content errors, so ``INVALID_MESSAGE`` and checked with the shape (§4.2.1).
    """
    if message.forwardsec != "optional" and (message.mixaddress or message.nymaddress):
        raise InvalidMessage('mixaddress and nymaddress must be "" unless '
                             'preferences.forwardsec is "optional"')
    if message.mixaddress and message.mixaddress not in allowed_mixaddresses:
        raise InvalidMessage(f"mixaddress {message.mixaddress!r} is not allowed on this server")


def check_repouris(message: UIDMessage, keyinitrepository_uris: Collection[str]) -> None:
    """Every ``repouris`` entry must be a KeyInit repository this server vouches for
    (§9, revision 2): senders contact the repositories an identity lists, so an
    unchecked one would let any registered user point them at any address.

    A content error, so ``INVALID_MESSAGE`` and checked with the shape (§4.2.1).
    """
    foreign = [uri for uri in message.repouris if uri not in keyinitrepository_uris]
    if foreign:
        raise InvalidMessage(f"repouris {foreign!r} are not KeyInit repositories of this "
                             f"server (it vouches for {', '.join(keyinitrepository_uris)})")


#: The localparts the protocol reserves by default (§2); a client refuses them before
#: making keys (a server may reserve more, which it then refuses on registration).
RESERVED_LOCALPARTS = frozenset({
    "keyserver", "root", "admin", "administrator", "postmaster", "hostmaster",
    "webmaster", "abuse", "security", "support", "noreply"})


def check_identity(message: UIDMessage, path_identity: str, domains: Collection[str],
                   reserved: Collection[str], own_identity: str | None = None) -> None:
    """Identity form, path match, served domain, reserved localpart (§2, §4.2.1)."""
    localpart, domain = parse_identity(message.identity)
    if path_identity != message.identity:
        raise InvalidIdentity(f"the path names {path_identity!r} but the message is for "
                              f"{message.identity!r}")
    if message.identity == own_identity:
        return
    if domain not in domains:
        raise DomainNotServed(f"this server does not serve {domain!r} "
                              f"(it serves {', '.join(sorted(domains))})")
    if localpart in reserved:
        raise ReservedIdentity(f"the name {localpart!r} is reserved on this server")


def is_held(latest: Latest | None, now_ms: int, reclaim_grace_ms: int) -> bool:
    """Held (only its owner may write) until ``not_after_ts + RECLAIM_GRACE`` (§4.3);
    reclaimable once strictly past it, the same boundary clients use (§7.3)."""
    return latest is not None and now_ms <= latest.not_after_ts + reclaim_grace_ms


def is_current(latest: Latest, now_ms: int) -> bool:
    """Current while ``not_before_ts <= now < not_after_ts`` (§4.3)."""
    return latest.not_before_ts <= now_ms < latest.not_after_ts


def check_state(message: UIDMessage, latest: Latest | None, now_ms: int,
                reclaim_grace_ms: int) -> bool:
    """``IDENTITY_TAKEN`` / ``MSGCOUNT_MISMATCH``; return True when this is a create."""
    if message.msgcount == 0:
        if is_held(latest, now_ms, reclaim_grace_ms):
            raise IdentityTaken(f"{message.identity} is already registered")
        return True
    if latest is None:
        raise MsgcountMismatch(f"{message.identity} is not registered: a first message "
                               "must have msgcount 0")
    if message.msgcount != latest.msgcount + 1:
        raise MsgcountMismatch(f"msgcount must be {latest.msgcount + 1} "
                               f"(the latest accepted is {latest.msgcount})")
    return False


def check_validity(message: UIDMessage, now_ms: int, max_uid_lifetime_ms: int,
                   cap_ts: int | None = None) -> None:
    """``not_before < not_after``, ``now < not_after <= cap + MAX_UID_LIFETIME`` (§4.1).

    ``cap_ts`` (default ``now_ms``) is the time the lifetime cap is judged at: a
    client judges it at the effective time of §7.3, since a later time makes it
    easier, and ``not_after > now`` at the entry's own time."""
    cap_ts = now_ms if cap_ts is None else cap_ts
    if message.not_before_ts >= message.not_after_ts:
        raise InvalidValidity("not_before_ts must be before not_after_ts")
    if message.not_after_ts <= now_ms:
        raise InvalidValidity("not_after_ts is not in the future")
    if message.not_after_ts > cap_ts + max_uid_lifetime_ms:
        raise InvalidValidity(f"not_after_ts is more than {max_uid_lifetime_ms} ms ahead")


def _verify(key: KeyEntry, message: UIDMessage, signature: bytes, what: str) -> None:
    if not verify_detached(key.pubkey, message.content_bytes, signature):
        raise InvalidSignature(f"{what} does not verify")


def check_signatures(message: UIDMessage, latest: Latest | None, create: bool) -> None:
    """The signature rules of a create (§4.1) or an update (§4.2)."""
    _verify(message.sigkey, message, message.selfsignature, "selfsignature (by content.sigkey)")
    if create:
        if message.usersignature:
            raise InvalidSignature("usersignature must be empty when creating")
        if message.sigescrow is None:
            if message.escrowsignature:
                raise InvalidSignature("escrowsignature must be empty without a sigescrow")
        else:
            _verify(message.sigescrow, message, message.escrowsignature,
                    "escrowsignature (by content.sigescrow, proving you hold the escrow key)")
        return
    assert latest is not None
    if bool(message.usersignature) == bool(message.escrowsignature):
        raise InvalidSignature("an update carries exactly one of usersignature "
                               "(old sigkey) and escrowsignature (escrow key)")
    if message.usersignature:
        if latest.sigescrow is not None and message.sigescrow != latest.sigescrow:
            raise InvalidSignature("changing sigescrow needs an escrowsignature by the old "
                                   "escrow key")
        _verify(latest.sigkey, message, message.usersignature,
                "usersignature (by the previous sigkey)")
    else:
        if latest.sigescrow is None:
            raise InvalidSignature("no escrow key was registered, so escrowsignature "
                                   "cannot authorize this update")
        _verify(latest.sigescrow, message, message.escrowsignature,
                "escrowsignature (by the registered escrow key)")


def signature_error(message: UIDMessage, latest: Latest | None) -> InvalidSignature | None:
    """The signature verdict for ``message`` if ``latest`` is the identity's latest
    message, computed ahead so the server can verify outside its write lock.

    None also when no verdict is possible (an update of an unknown identity, which
    the state check refuses first)."""
    create = message.msgcount == 0
    if not create and latest is None:
        return None
    try:
        check_signatures(message, latest, create)
    except InvalidSignature as exc:
        return exc
    return None


def check_lastentry(position: int | None, head_pos: int, successor_ts: int | None,
                    now_ms: int, max_age_ms: int) -> None:
    """``lastentry`` names the head, or an entry whose successor was appended at most
    ``LASTENTRY_MAX_AGE`` ago (§7.4). ``position`` is where lastentry's hash is found."""
    if position is None:
        raise StaleLastentry("lastentry is not the hash of any entry of this chain")
    if position == head_pos:
        return
    assert successor_ts is not None
    if now_ms - successor_ts > max_age_ms:
        raise StaleLastentry(f"lastentry (position {position}) is too old: sync the chain "
                             "and use a recent entry")


@dataclass(frozen=True)
class Dated:
    """A message of an identity's history as the chain dates and judges it (§7.3):
    its reply's ``entry.ts``, its effective time (at most ``ts``), and the limits of
    the chain in force for it: the lifetime cap at its position, and the largest
    reclaim grace in force at any position from the previous message to it."""

    message: UIDMessage
    ts: int
    effective_ts: int
    reclaim_grace_ms: int
    max_uid_lifetime_ms: int


def check_server_member(message: UIDMessage, own_identity: str) -> None:
    """Only the server's own messages carry ``preferences.server``, and every one of
    them does (§4, revision 2); ``INVALID_MESSAGE`` otherwise."""
    if message.identity == own_identity and message.server is None:
        raise InvalidMessage(f"{own_identity}'s messages must carry preferences.server")
    if message.identity != own_identity and message.server is not None:
        raise InvalidMessage("only the server's own messages may carry preferences.server")


def verify_sequence(history: Sequence[Dated]) -> Latest:
    """Check that an identity's messages form a valid create/update sequence (§7.3);
    return the last one's ``Latest``.

    The rules a later time makes easier, a reclaim after the grace (a new msgcount 0
    is a new owner) and the lifetime cap, are judged at each message's effective
    time (§7.3, revision 2), so that a server dating an entry in the future gains
    nothing; ``not_after_ts > ts`` is judged at ``entry.ts``. The limits are the
    chain's, so that a server cannot shorten a grace after the fact.
    """
    latest: Latest | None = None
    for index, dated in enumerate(history):
        message, ts = dated.message, dated.ts
        eff = min(ts, dated.effective_ts)
        try:
            create = check_state(message, latest, eff, dated.reclaim_grace_ms)
            check_validity(message, ts, dated.max_uid_lifetime_ms, cap_ts=eff)
            check_signatures(message, latest, create)
        except (IdentityTaken, MsgcountMismatch, InvalidValidity, InvalidSignature) as exc:
            raise VerificationError(f"{message.identity}, message {index} "
                                    f"(msgcount {message.msgcount}): {exc}") from None
        latest = Latest.of(message)
    if latest is None:
        raise VerificationError("no messages")
    return latest

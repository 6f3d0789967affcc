"""An identity's history as the chain and the server's replies tell it (§7.3),
verified without any I/O: the caller found the entries and fetched their replies.

For every entry: the reply must name this entry and position and be signed by the
server key the chain says was the server's at that position (§11.3); the message
must open with the UIDHash the entry gave and be for this identity. Then the whole
create/update sequence must hold under §4, each rule at its reply's ``entry.ts``
(or effective time) and under the limits the chain had in force there.
The server's own keys and policy come from its own identity,
``keyserver@<server_name>``, the same way: each of its entries installs the next
key and carries the policy in force from its position on (§4 ``preferences.server``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..protocol.errors import ProtocolError, VerificationError
from ..protocol.hashchain import open_entry
from ..protocol.identity import server_identity
from ..protocol.uidmessage import UIDMessage, decrypt_uid_message, parse_uid_message
from ..protocol.uidrules import Latest, check_server_member, is_current, verify_sequence
from ..protocol.wire import UIDMessageReply
from .evidence import BrokenHistory
from .keyring import KeyValidity, ServerKey, check_reply_signature
from .serverpolicy import ChainPolicy, PolicyAt

#: §7.3: how much later than the client first received an entry its time may be.
FIRST_SEEN_SLACK_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class Match:
    """One entry of the identity on the verified chain, its UIDHash (opened from
    the entry) and the server's reply fetched for it (not yet verified)."""

    pos: int
    entry: bytes
    uid_hash: bytes
    reply: UIDMessageReply
    #: When this client first received an entry at or after ``pos`` (§7.3 ``F``).
    first_seen_ts: int | None = None

    @property
    def effective_ts(self) -> int:
        """§7.3: the reply's ``entry.ts``, but no later than ``F`` + 5 minutes, so a
        server that dates an entry in the future gains nothing by it."""
        ts = self.reply.entry.ts
        if self.first_seen_ts is None:
            return ts
        return min(ts, self.first_seen_ts + FIRST_SEEN_SLACK_MS)


@dataclass(frozen=True)
class Found:
    """One verified message of an identity, where the chain holds it, and the
    server's signed reply that vouches for it."""

    pos: int
    ts: int
    message: UIDMessage
    reply: UIDMessageReply


@dataclass(frozen=True)
class ServerRecord:
    """What the chain says of its server: its signing keys and its policy."""

    keys: list[ServerKey]
    policy: ChainPolicy


@dataclass(frozen=True)
class LookupResult:
    identity: str
    history: tuple[Found, ...]
    latest: Latest

    @property
    def message(self) -> UIDMessage:
        return self.history[-1].message

    def is_current(self, now_ms: int) -> bool:
        return is_current(self.latest, now_ms)


def _check_entry(match: Match) -> None:
    entry = match.reply.entry
    if entry.hashchain_entry != match.entry or entry.hashchain_pos != match.pos:
        raise VerificationError(f"the reply for position {match.pos} names another entry")


def _open(match: Match, identity: str, server_name: str) -> UIDMessage:
    reply, pos = match.reply, match.pos
    try:
        message = parse_uid_message(decrypt_uid_message(reply.entry.uid_message_encrypted,
                                                        match.uid_hash))
        check_server_member(message, server_identity(server_name))
    except ProtocolError as exc:
        raise VerificationError(f"the message at position {pos} is malformed: {exc}") from None
    if message.identity != identity:
        raise VerificationError(f"the message at position {pos} is for {message.identity}")
    return message


def open_reply(identity: str, server_name: str, reply: UIDMessageReply) -> Found:
    """One reply taken on its own (``lookup --light``, no chain to search): its entry
    must open for ``identity`` (§7.1) and its message decrypt with the UIDHash the
    entry gives, be well formed and be ``identity``'s. Its signature is the
    caller's to check, and no rule of §4 can be, without the history before it."""
    entry, pos = reply.entry.hashchain_entry, reply.entry.hashchain_pos
    uid_hash = open_entry(entry, identity)
    if uid_hash is None:
        raise VerificationError(f"the entry at position {pos} is not one of {identity}")
    match = Match(pos, entry, uid_hash, reply)
    return Found(pos, reply.entry.ts, _open(match, identity, server_name), reply)


def _dated(policy: ChainPolicy, history: Sequence[Found], matches: Sequence[Match]):
    return policy.dated([(found.pos, found.message, found.ts, match.effective_ts)
                         for found, match in zip(history, matches)])


def verify_server_keys(server_name: str, matches: Sequence[Match],
                       validity: KeyValidity) -> ServerRecord:
    """The server's signing keys and policy as its own entries record them (§4,
    §7.2), given the matches of ``keyserver@<server_name>``; each of their replies
    signed by the key of its position, valid at its time (``validity``)."""
    own = server_identity(server_name)
    origin = f"{server_name}/keyserver"
    keys: list[ServerKey] = []
    history, records = [], []
    for match in matches:
        _check_entry(match)
        message = _open(match, own, server_name)
        keys.append(ServerKey(match.pos, match.reply.entry.ts, message.sigkey.pubkey))
        assert message.server is not None   # check_server_member
        if message.server.log_vkey.name != origin:
            raise VerificationError(f"the log key at position {match.pos} is named "
                                    f"{message.server.log_vkey.name!r}, not {origin!r}")
        history.append(Found(match.pos, match.reply.entry.ts, message, match.reply))
        records.append(PolicyAt(match.pos, match.reply.entry.ts, match.effective_ts,
                                message.server))
    if not keys or keys[0].pos != 0:
        raise VerificationError(f"the chain does not start with {own}")
    # Signatures once every key is known: a key document may name all of them. A
    # server entry's own reply may be signed by the key it installs (entry 0 always
    # is) or, within the overlap, by the key it replaces.
    for match in matches:
        check_reply_signature(match.reply, server_name, keys, match.pos, validity)
    policy = ChainPolicy(records)
    verify_sequence(_dated(policy, history, matches))
    return ServerRecord(keys, policy)


def verify_history(identity: str, server_name: str, matches: Sequence[Match],
                   server: ServerRecord, validity: KeyValidity) -> LookupResult | None:
    """The identity's verified history and current keys, or None without matches.

    A sequence that breaks §4 although every reply is validly signed is
    ``BrokenHistory``, carrying those replies as evidence."""
    history = []
    for match in matches:
        _check_entry(match)
        check_reply_signature(match.reply, server_name, server.keys, match.pos, validity)
        history.append(Found(match.pos, match.reply.entry.ts,
                             _open(match, identity, server_name), match.reply))
    if not history:
        return None
    try:
        latest = verify_sequence(_dated(server.policy, history, matches))
    except VerificationError as exc:
        # Every reply is the server's signed word by now: the break is its doing.
        raise BrokenHistory(identity, [found.reply for found in history], str(exc)) from None
    return LookupResult(identity, tuple(history), latest)

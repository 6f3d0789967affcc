"""The user's own identities on one keyserver: register (§13 steps 2–3), update
(a new sigkey signed by the old one, §4.2), recover (a new sigkey signed by the
paper escrow key), and checking that the server's replies match the chain (§7.5).

Every write follows the same path: sync and look the identity up on the verified
chain, build and sign the message, pay with a wallet token (when the server
prices the operation), check that the reply promises our entry, sync until the
chain holds exactly that entry at the promised position, check the reply's
signature with the server key of that position (§11.3), and record the reply.

Keys are never lost to a failure halfway, and none is left by an unfinished
registration: its keys stay in memory until the paper is confirmed, and the escrow
key never reaches the disk. A new sigkey (a registration's too) is kept as
``<identity>.sigkey.next`` until the chain shows it; if the server refused the
message (a 4xx answer) it is deleted at once, and if the outcome is unknown (no
answer, a 5xx, or a reply that did not check out) the next command on the identity
settles it from the chain: promoted if the chain holds it, deleted if not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import nacl.signing

from .clock import now_ms
from .protocol.encoding import sha256
from .protocol.errors import (ClientError, DomainNotServed, IdentityTaken, ProtocolError,
                              ReservedIdentity, TransportError, VerificationError)
from .protocol.hashchain import open_entry
from .protocol.identity import parse_identity
from .protocol.keys import ed25519_entry
from .protocol.uidmessage import (MAX_REPOURIS, build_uid_content, sign_uid_content, uid_hash,
                                  update_uid_content)
from .protocol.uidrules import RESERVED_LOCALPARTS, is_held
from .protocol.wire import UIDMessageReply
from .session import ServerSession
from .trust.history import LookupResult
from .trust.keyring import check_reply_signature

if TYPE_CHECKING:
    # Only the commands that hold keys load the keystore (and its imports): sync
    # and lookup start faster without it. The caller that makes a Keystore has it.
    from .store.keystore import Keystore

#: Lifetime asked for when the server allows more.
DEFAULT_LIFETIME_MS = 365 * 24 * 3600 * 1000
#: Room for a client clock that is off from the server's: validity starts this much
#: earlier and ends this much before the server's limit.
CLOCK_MARGIN_MS = 5 * 60 * 1000
#: Syncs tried while waiting for a promised position to reach the chain.
SYNC_ATTEMPTS = 20


def key_name(identity: str, role: str) -> str:
    """Keystore name of one of ``identity``'s keys (names allow no ``@`` and at
    most 64 characters, so long identities go by a hash)."""
    base = identity.replace("@", "_at_")
    if len(base) > 40:
        base = sha256(identity.encode()).hex()[:40]
    return f"{base}.{role}"


class NotRegistered(ClientError):
    """The identity is not on the chain (or its keys are not on this machine)."""


@dataclass(frozen=True)
class Written:
    """A message the chain now holds at ``pos``, with the server's reply."""

    identity: str
    msgcount: int
    pos: int
    reply: UIDMessageReply


class Accounts:
    """The user's identities on the server of ``session``; ``keystore`` holds their
    private keys (None for commands that need none)."""

    def __init__(self, session: ServerSession, keystore: Keystore | None = None):
        self.session, self.keystore = session, keystore
        self.home, self.server, self.chain = session.home, session.server, session.chain
        self.progress = session.progress

    def validity(self) -> tuple[int, int]:
        """``(not_before_ts, not_after_ts)`` for a new message: from a little before
        now to as long as the server allows, within a year."""
        now = now_ms()
        lifetime = min(DEFAULT_LIFETIME_MS, self.session.limits.max_uid_lifetime_ms - CLOCK_MARGIN_MS)
        return now - CLOCK_MARGIN_MS, now + lifetime

    # --- writing ------------------------------------------------------------------

    def register(self, identity: str, *, deliver_paper: Callable[[str], None],
                 confirm: Callable[[], bool], discard_unfinished: bool = False) -> Written:
        """Register ``identity`` (§13): a new SIGKEY and SIGESCROW; the escrow key goes
        to paper only and never to disk.

        Everything the server would refuse for reasons known beforehand (a domain it
        does not serve, a reserved name, a name already held, no token) is checked on
        the synced chain and the signed capabilities before any key is made or any
        paper printed. The keys stay in memory until the paper is confirmed saved;
        the signing key is then written as ``<identity>.sigkey.next`` just before the
        registration is sent, and becomes ``<identity>.sigkey`` once the chain holds
        it. An abort or a refusal leaves no key; only when the outcome is unknown (no
        answer) is the pending key kept, for the next command to settle from the
        chain (promoted if the chain holds it, deleted if not)."""
        keystore = self._keystore()
        self.session.sync()
        self.check_registrable(identity)
        self.progress(f"checking that {identity} is free")
        existing = self.session.lookup(identity)
        pending = key_name(identity, "sigkey.next")
        if existing is None and pending in keystore.names():
            self.progress("an earlier registration did not reach the chain: deleting its key")
            keystore.delete(pending)
        if existing is not None and pending in keystore.names():
            self._settle_pending(identity, existing)
        if existing is not None and key_name(identity, "sigkey") in keystore.names() and \
                ed25519_entry(keystore.get_signing_key(key_name(identity, "sigkey"))) \
                == existing.message.sigkey:
            # Also after a 'register' stopped once the chain held it, before it said so.
            raise ClientError(f"{identity} is already registered from this machine: its "
                              "signing key here is the one on the chain; nothing more to do")
        if existing is not None and is_held(existing.latest, now_ms(),
                                            self.session.limits.reclaim_grace_ms):
            raise IdentityTaken(f"{identity} is already registered on {self.server} "
                                f"(position {existing.history[-1].pos})")
        self._unfinished_keys(identity, discard=discard_unfinished)
        self.session.require_tokens("create_uid")
        sigkey, escrow = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
        from .store.paper import format_paper_backup

        deliver_paper(format_paper_backup(identity, escrow))
        if not confirm():
            raise ClientError("registration cancelled: the escrow key was not saved; no key "
                              "was kept, so that paper is void: run 'keyclient register' again")
        not_before_ts, not_after_ts = self.validity()
        content = build_uid_content(
            identity, ed25519_entry(sigkey), msgcount=0, not_before_ts=not_before_ts,
            not_after_ts=not_after_ts, lastentry=self.chain.last_hash,
            sigescrow=ed25519_entry(escrow),
            # The server lists its own repositories first, then those it vouches
            # for (§9); a message names at most MAX_REPOURIS (§4).
            repouris=self.session.capabilities.keyinitrepository_uris[:MAX_REPOURIS])
        message = sign_uid_content(content, sigkey, escrow_key=escrow)
        keystore.put_signing_key(pending, sigkey, overwrite=True)
        try:
            written = self._submit(message, pending=pending)
        except BaseException as exc:
            # A refusal: _submit deleted it. No answer, a bad one or an interrupt while
            # sending: the outcome is unknown, the key is kept for settling. Anything
            # else failed before sending.
            if not isinstance(exc, (ProtocolError, TransportError, VerificationError,
                                    KeyboardInterrupt)):
                keystore.delete(pending)
            raise
        keystore.put_signing_key(key_name(identity, "sigkey"), sigkey, overwrite=True)
        keystore.delete(pending)
        return written

    def check_registrable(self, identity: str) -> None:
        """What the server's signed capabilities (and the protocol's reserved names)
        already tell: its domain must be served, its name not reserved (§2)."""
        localpart, domain = parse_identity(identity)
        domains = self.session.capabilities.domains
        if domain not in domains:
            raise DomainNotServed(f"{self.server} does not register names of {domain} (it "
                                  f"serves {', '.join(sorted(domains)) or 'no domain'})")
        if localpart in RESERVED_LOCALPARTS:
            raise ReservedIdentity(f"the name {localpart!r} is reserved: choose another")

    def _unfinished_keys(self, identity: str, *, discard: bool) -> None:
        """Keys of ``identity`` left by an unfinished registration of an older
        keyclient (which wrote both keys before the paper was confirmed): the chain
        does not hold the identity, so they were never used."""
        keystore = self._keystore()
        names = [name for name in (key_name(identity, "sigkey"), key_name(identity, "escrow"))
                 if name in keystore.names()]
        if not names:
            return
        if not discard:
            raise ClientError(
                f"keys of an unfinished registration of {identity} are on this machine "
                f"({', '.join(names)}); {identity} is not on {self.server}'s chain, so they "
                f"were never used and any escrow paper printed for them is void: run "
                f"'keyclient register {identity} --discard-unfinished' to delete them and "
                "register again")
        self.progress(f"deleting the keys of the unfinished registration ({', '.join(names)})")
        for name in names:
            keystore.delete(name)

    def update(self, identity: str) -> Written:
        """Replace the sigkey with a new one, signed by the current one (§4.2); this
        also renews the validity."""
        self._keystore()
        current = self.current(identity)
        old = self.own_sigkey(identity, current)
        self.progress("making a new signing key")
        return self._replace_sigkey(current, lambda content, new: sign_uid_content(
            content, new, previous_sigkey=old))

    def recover(self, identity: str, escrow: nacl.signing.SigningKey) -> Written:
        """Replace a lost or compromised sigkey with a new one, authorized by the
        paper escrow key (§4.2)."""
        self._keystore()
        current = self.current(identity)
        if current.message.sigescrow is None or \
                current.message.sigescrow.pubkey != bytes(escrow.verify_key):
            raise ClientError(f"this backup is not the escrow key registered for {identity}")
        self.progress("making a new signing key")
        return self._replace_sigkey(current, lambda content, new: sign_uid_content(
            content, new, escrow_key=escrow))

    def current(self, identity: str) -> LookupResult:
        """``identity`` looked up on the synced chain, after settling a sigkey change
        whose outcome was unknown."""
        self.session.sync()
        self.progress(f"looking up {identity} on the chain")
        result = self.session.lookup(identity)
        if result is None:
            raise NotRegistered(f"{identity} is not on {self.server}'s chain")
        self._settle_pending(identity, result)
        self._record(identity, result)
        return result

    def own_sigkey(self, identity: str, current: LookupResult) -> nacl.signing.SigningKey:
        """Our private sigkey of ``identity``, which must be the one on the chain."""
        from .store.keystore import KeyNotFound

        try:
            key = self._keystore().get_signing_key(key_name(identity, "sigkey"))
        except KeyNotFound:
            raise NotRegistered(f"no signing key of {identity} on this machine: recover it "
                                "with the escrow backup ('keyclient recover')") from None
        if ed25519_entry(key) != current.message.sigkey:
            raise NotRegistered(f"the signing key of {identity} on this machine is not the "
                                "one on the chain: recover with the escrow backup "
                                "('keyclient recover')")
        return key

    def _keystore(self) -> Keystore:
        if self.keystore is None:
            raise RuntimeError("this command needs the keystore")
        return self.keystore

    def _replace_sigkey(self, current: LookupResult,
                        sign: Callable[[dict, nacl.signing.SigningKey], dict]) -> Written:
        keystore = self._keystore()
        identity = current.identity
        self.session.require_tokens("update_uid")
        new = nacl.signing.SigningKey.generate()
        pending = key_name(identity, "sigkey.next")
        keystore.put_signing_key(pending, new, overwrite=True)
        not_before_ts, not_after_ts = self.validity()
        content = update_uid_content(current.message, ed25519_entry(new),
                                     not_before_ts=not_before_ts, not_after_ts=not_after_ts,
                                     lastentry=self.chain.last_hash)
        written = self._submit(sign(content, new), pending=pending)
        keystore.put_signing_key(key_name(identity, "sigkey"), new, overwrite=True)
        keystore.delete(pending)
        return written

    def _settle_pending(self, identity: str, current: LookupResult) -> None:
        keystore = self._keystore()
        pending = key_name(identity, "sigkey.next")
        if pending not in keystore.names():
            return
        key = keystore.get_signing_key(pending)
        if ed25519_entry(key) == current.message.sigkey:
            self.progress("an earlier key change did reach the chain: using its key")
            keystore.put_signing_key(key_name(identity, "sigkey"), key, overwrite=True)
            # The sync before alerted on it as an entry we did not make: we did.
            self.home.acknowledge_alert(identity, current.history[-1].pos, now_ms(),
                                        self.server)
        keystore.delete(pending)

    def _submit(self, message: dict, *, pending: str | None = None) -> Written:
        """Send, pay, and confirm on the chain; see the module docstring."""
        content = message["content"]
        create = content["msgcount"] == 0
        self.progress("sending the " + ("registration" if create else "update"))
        send = self.session.api.create_uid if create else self.session.api.update_uid
        try:
            with self.session.payment("create_uid" if create else "update_uid") as authorization:
                reply = send(message, authorization)
        except ProtocolError as exc:
            if pending is not None and exc.refused:   # the server changed nothing
                self._keystore().delete(pending)
            raise
        pos = self._confirm_on_chain(content["identity"], message, reply)
        written = Written(content["identity"], content["msgcount"], pos, reply)
        self.session.hold([reply])
        self.home.record_replies(self.server, written.identity, [(pos, written.msgcount, reply)],
                                 replace=True)
        return written

    def _confirm_on_chain(self, identity: str, message: dict, reply: UIDMessageReply) -> int:
        """The reply must promise our entry; the chain must then hold exactly it there,
        signed by the server key of that position (§11.3)."""
        pos, entry = reply.entry.hashchain_pos, reply.entry.hashchain_entry
        if open_entry(entry, identity) != uid_hash(message):
            raise VerificationError("the reply's chain entry is not our message")
        self.progress(f"waiting for position {pos} on the chain")
        for _ in range(SYNC_ATTEMPTS):
            if self.chain.length > pos:
                break
            self.session.sync(expect={pos: entry})
        if self.chain.length <= pos or self.chain.entry(pos) != entry:
            raise VerificationError(f"the chain does not hold our entry at position {pos}")
        check_reply_signature(reply, self.server, self.session.keys, pos,
                              self.session.keyring)
        return pos

    def _record(self, identity: str, result: LookupResult) -> None:
        """Keep the verified replies of an identity we own (found by lookup)."""
        self.home.record_replies(self.server, identity, [
            (found.pos, found.message.msgcount, found.reply) for found in result.history])

    # --- checking -----------------------------------------------------------------

    def check_replies(self) -> int:
        """Each reply we hold must match the chain's entry at its position (§7.5);
        return how many the chain covers so far."""
        checked = 0
        for identity, pos, reply in self.home.own_replies(self.server):
            if pos >= self.chain.length:
                continue
            if self.chain.entry(pos) != reply.entry.hashchain_entry:
                raise VerificationError(
                    f"the chain no longer holds {identity}'s entry at position {pos}: the "
                    "server rewrote history", position=pos)
            checked += 1
        return checked

    def verify(self) -> int:
        """Re-verify every link of the local chain from its first entry, then our
        replies against it and their signatures, and look for entries of our
        identities that we did not make (``monitor``); return how many replies."""
        self.session.verify_chain()
        checked = self.check_replies()
        keys = self.session.track_keys()
        for _, pos, reply in self.home.own_replies(self.server):
            if pos < self.chain.length:
                check_reply_signature(reply, self.server, keys, pos, self.session.keyring)
        self.session.monitor()
        return checked

"""The user's own identities: registering a pseudonym (§13 steps 2–3).

Registration checks on the verified local chain that the pseudonym is free,
generates SIGKEY and SIGESCROW, hands the escrow key out on paper and waits for
the user to confirm it is kept, sends the signed UIDMessage paid with a token,
checks the signed reply, syncs until the entry is on the chain at the promised
position, and only then deletes the escrow key from the machine. A failure on
the way leaves no new key and no new state behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import nacl.signing

from .api import KeyserverAPI
from .encoding import b64decode, now_ms
from .errors import IdentityTaken, VerificationError
from .hashchain import open_entry
from .home import Home
from .keys import ed25519_entry
from .keystore import Keystore, format_paper_backup
from .lookup import check_reply_signature, lookup, server_keys
from .uidmessage import build_uid_content, sign_uid_content, uid_hash
from .uidrules import Limits, is_held

OWN_SCHEMA = """
CREATE TABLE IF NOT EXISTS own (
    server TEXT NOT NULL,
    identity TEXT NOT NULL,
    pos INTEGER NOT NULL,
    msgcount INTEGER NOT NULL,
    reply TEXT NOT NULL,
    PRIMARY KEY (server, identity)
)
"""
#: Lifetime asked for when the server allows more.
DEFAULT_LIFETIME_MS = 365 * 24 * 3600 * 1000
SYNC_ATTEMPTS = 20


def key_name(identity: str, role: str) -> str:
    """Keystore names allow no ``@``."""
    return f"{identity.replace('@', '_at_')}.{role}"


@dataclass(frozen=True)
class Registration:
    identity: str
    pos: int
    reply: dict


def register(home: Home, server: str, url: str, identity: str, keystore: Keystore, *,
             deliver_paper: Callable[[str], None], confirm: Callable[[], bool],
             progress: Callable[[str], None] = lambda step: None) -> Registration:
    """Register ``identity``; see the module docstring for the steps."""
    home.db.conn.execute(OWN_SCHEMA)
    api = KeyserverAPI(url)
    chain = home.chain(server)
    progress("syncing the chain")
    chain.sync(api)
    capabilities = api.capabilities()
    limits = Limits.from_capabilities(capabilities)
    now = now_ms()
    progress(f"checking that {identity} is free")
    existing = lookup(api, chain, server, identity, limits)
    if existing is not None and is_held(existing.latest, now, limits.reclaim_grace_ms):
        raise IdentityTaken(f"{identity} is already registered on {server} "
                            f"(position {existing.history[-1].pos})")
    with home.wallet() as wallet:
        wallet.require(server)
    sigkey, escrow = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    names = [key_name(identity, "sigkey"), key_name(identity, "escrow")]
    keystore.put_signing_key(names[0], sigkey)
    keystore.put_signing_key(names[1], escrow)  # until the paper copy is confirmed used
    try:
        deliver_paper(format_paper_backup(identity, escrow))
        if not confirm():
            raise VerificationError("registration cancelled: the escrow key was not saved")
        content = build_uid_content(
            identity, ed25519_entry(sigkey), msgcount=0, not_before_ts=now,
            not_after_ts=now + min(DEFAULT_LIFETIME_MS, limits.max_uid_lifetime_ms),
            lastentry=chain.last_hash, sigescrow=ed25519_entry(escrow),
            repouris=capabilities.get("keyinitrepository_uris", []))
        message = sign_uid_content(content, sigkey, escrow_key=escrow)
        progress("sending the registration")
        with home.wallet() as wallet, wallet.spend(server) as authorization:
            reply = api.create_uid(message, authorization)
        pos = _confirm_on_chain(api, chain, server, identity, message, reply, limits, progress)
    except BaseException:
        keystore.delete(names[0])
        keystore.delete(names[1])
        raise
    with home.db.conn:
        home.db.conn.execute(
            "INSERT OR REPLACE INTO own (server, identity, pos, msgcount, reply)"
            " VALUES (?, ?, ?, 0, ?)", (server, identity, pos, json.dumps(reply)))
    keystore.delete(names[1])
    return Registration(identity, pos, reply)


def _confirm_on_chain(api: KeyserverAPI, chain, server: str, identity: str, message: dict,
                      reply: dict, limits: Limits, progress: Callable[[str], None]) -> int:
    """The reply must promise our entry; the chain must then hold exactly it there,
    signed by the server key of that position (§11.3)."""
    try:
        pos = reply["entry"]["hashchain_pos"]
        entry = b64decode(reply["entry"]["hashchain_entry"], "hashchain_entry",
                          error=VerificationError)
    except (KeyError, TypeError) as exc:
        raise VerificationError(f"malformed registration reply: {exc}") from None
    if open_entry(entry, identity) != uid_hash(message):
        raise VerificationError("the reply's chain entry is not our registration")
    progress(f"waiting for position {pos} on the chain")
    for _ in range(SYNC_ATTEMPTS):
        if chain.length > pos:
            break
        chain.sync(api)
    if chain.length <= pos or chain.entry(pos) != entry:
        raise VerificationError(f"the chain does not hold our entry at position {pos}")
    check_reply_signature(reply, server, server_keys(api, chain, server, limits), pos)
    return pos

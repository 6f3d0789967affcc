"""The server's signing keys over time (§11.1, §11.2): which key signs now, the
rotation that installs a new one on the chain, and the key document that publishes
them with their windows.
"""

from __future__ import annotations

from typing import Sequence

from client.protocol.encoding import format_ms
from client.protocol.serverkeys import format_key_document, sign_key_document

from ..storage import signingkeys
from ..storage.db import Database, transaction
from ..storage.signingkeys import KeyWindow
from . import own
from .policy import Policy
from .signing import KeyFile, ServerKey, generate_key, write_keys


class RotationRefused(Exception):
    """A rotation that would make more than two keys current (§11.2)."""


def adopt(db: Database, keys: Sequence[ServerKey], now: int) -> None:
    """Give ``keys`` windows when none exist: the first key of a new instance, or
    those of an instance made before key windows existed (the file's last signs)."""
    if signingkeys.windows(db):
        return
    with transaction(db):
        if not signingkeys.windows(db):
            for key in keys:
                signingkeys.insert(db, key.key_id, key.pubkey, now)


def current_key(db: Database, keyfile: KeyFile) -> ServerKey:
    """The key that signs now, as ``db`` (in a write: its transaction) says (§11.2)."""
    return signing_key(signingkeys.windows(db), keyfile)


def current_keys(db: Database, keyfile: KeyFile, now: int) -> list[ServerKey]:
    """The keys current at ``now`` (``verify_keys``: the signing key, and the previous
    one during its overlap), oldest first."""
    windows = signingkeys.windows(db)
    if not windows:
        return list(keyfile.keys().values())[-1:]
    return [keyfile.get(window.key_id) for window in windows if window.current_at(now)]


def rotate(db: Database, keyfile: KeyFile, policy: Policy, overlap_ms: int,
           now: int) -> ServerKey:
    """A new signing key (§11.2): its seed added to the key file, then in one
    transaction its window, the end of the old key's overlap, and the update of
    ``keyserver@`` that installs it (signed by the new key, authorized by the old)."""
    windows = signingkeys.windows(db)
    _check_one_current(windows, now)
    new = generate_key()
    write_keys(keyfile.path, [*keyfile.keys().values(), new])   # unused until its window
    with transaction(db):
        windows = signingkeys.windows(db)
        _check_one_current(windows, now)
        old = keyfile.get(windows[-1].key_id)
        own.update(db, policy, [old, new], own.current(db), now)
        signingkeys.expire(db, old.key_id, now + overlap_ms)
        signingkeys.insert(db, new.key_id, new.pubkey, now)
    return new


def _check_one_current(windows: list[KeyWindow], now: int) -> None:
    current = [window for window in windows if window.current_at(now)]
    if len(current) > 1:
        raise RotationRefused(
            f"the previous rotation's overlap lasts until {format_ms(current[0].expired_ts)}:"
            " rotating now would make three keys current; wait until it ends")


def key_document(windows: Sequence[KeyWindow], keyfile: KeyFile, server_name: str, now: int,
                 lifetime_ms: int) -> dict:
    """The signed key document (§11.1) at ``now`` of the key ``windows``
    (``storage.signingkeys.windows``): current keys, old keys with their
    ``expired_ts``, valid for ``lifetime_ms``; signed by every current key."""
    current = [window for window in windows if window.current_at(now)] or list(windows[-1:])
    old = [window for window in windows if window not in current]
    document = format_key_document(
        server_name, {window.key_id: window.pubkey for window in current},
        {window.key_id: (window.pubkey, window.expired_ts) for window in old
         if window.expired_ts is not None},
        now + lifetime_ms)
    return sign_key_document(document, server_name,
                             {window.key_id: keyfile.get(window.key_id).signing_key
                              for window in current})


def signing_key(windows: Sequence[KeyWindow], keyfile: KeyFile) -> ServerKey:
    """The key that signs at the time of ``windows``: the newest window's (§11.2)."""
    return keyfile.get(signing_key_id(windows, keyfile))


def signing_key_id(windows: Sequence[KeyWindow], keyfile: KeyFile) -> str:
    """The id of ``signing_key``, from the windows alone when there are any: what a
    cached signature is checked against, without the key file's ``stat``."""
    return windows[-1].key_id if windows else list(keyfile.keys())[-1]


def next_change(windows: Sequence[KeyWindow], now: int) -> int | None:
    """When the key document next changes by itself (an overlap ends), if it will."""
    ends = [window.expired_ts for window in windows
            if window.expired_ts is not None and window.expired_ts > now]
    return min(ends) if ends else None

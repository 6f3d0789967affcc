"""What the views need of the app and the request, in one place: the ``Policy`` built
by ``create_app``, the request's one clock reading, the server's signing, token and
witness keys (loaded once per process), and the request's charge (§10.2).

Reading the clock once per request and passing ``now`` down makes every check of a
request agree on the time, and lets freezegun tests hit exact boundaries (§4.2.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, g, request

from client.protocol.cosignature import witness_name, witness_vkey

from ..clock import now_ms
from ..service import payment, serverkeys
from ..service.payment import Charge
from ..service.policy import Policy
from ..service.signing import KeyFile, ServerKey, Sign, key_file_path, signer, witness_key
from ..service.tokenkeys import TokenKeyring
from ..service.witness import Witness
from ..storage import signingkeys
from ..storage.db import data_version, get_db
from ..storage.signingkeys import KeyWindow

#: ``app.extensions`` key of the app's one ``Policy``.
POLICY = "keyserver.policy"


def policy() -> Policy:
    return current_app.extensions[POLICY]


def read_clock() -> None:
    """``before_request``: the request's one reading of the clock."""
    g.now_ms = now_ms()


def request_now() -> int:
    """The time of this request, as read once when it began."""
    return g.now_ms


def key_file() -> KeyFile:
    """The signing key file as this process sees it (made lazily, so the factory
    works before ``keyserver init`` has written it; reloaded when it changes)."""
    keyfile = current_app.extensions.get("keyserver.key_file")
    if keyfile is None:
        keyfile = current_app.extensions.setdefault("keyserver.key_file", KeyFile(
            key_file_path(current_app.instance_path, current_app.config["SIGNING_KEY_FILE"])))
    return keyfile


def server_keys() -> list[ServerKey]:
    """The keys current now (§11.2: the signing key, and the previous one during its
    overlap), oldest first."""
    return serverkeys.current_keys(get_db(), key_file(), now_ms())


@dataclass(frozen=True)
class _Windows:
    version: int
    windows: tuple[KeyWindow, ...]


def key_windows() -> tuple[KeyWindow, ...]:
    """The signing-key windows as last committed, read again only once the database
    changed (``storage.db.DataVersion``), so the key document and the notary's answers
    cost no query. Not for writes, which take the key from their own transaction
    (``current_key``)."""
    version = data_version()
    cached: _Windows | None = current_app.extensions.get("keyserver.key_windows")
    if cached is None or cached.version != version:
        cached = _Windows(version, tuple(signingkeys.windows(get_db())))
        current_app.extensions["keyserver.key_windows"] = cached
    return cached.windows


def answer_signer() -> Sign:
    """Sign an answer that is not a write (a notary's countersignature) as this server,
    with the key that signs now."""
    return signer(policy().server_name, serverkeys.signing_key(key_windows(), key_file()))


def current_key() -> ServerKey:
    """The key that signs new objects, as the database says now (in a write, as the
    transaction says: the key the chain gives the entry's position)."""
    return serverkeys.current_key(get_db(), key_file())


def sign(obj: dict) -> dict:
    """Sign ``obj`` as this server with its current key."""
    return signer(policy().server_name, current_key())(obj)


def witness() -> Witness:
    """This server as a witness (§8.1): its name and key, read once per process."""
    me = current_app.extensions.get("keyserver.witness")
    if me is None:
        key = witness_key(key_file_path(current_app.instance_path,
                                        current_app.config["WITNESS_KEY_FILE"]))
        me = current_app.extensions.setdefault(
            "keyserver.witness", Witness(witness_vkey(witness_name(policy().server_name), key),
                                         key))
    return me


def token_keyring() -> TokenKeyring:
    """This process's token keys."""
    keyring = current_app.extensions.get("keyserver.token_keyring")
    if keyring is None:
        keyring = current_app.extensions.setdefault("keyserver.token_keyring",
                                                    TokenKeyring(current_app.instance_path))
    return keyring


def charger() -> Charge:
    """The charge for this request's ``Authorization`` header, at the request's time."""
    return payment.charger(get_db(), token_keyring(), policy(),
                           request.headers.get("Authorization"), request_now())


def www_authenticate() -> str | None:
    """The challenge a 401 of this request carries (§10.2)."""
    return payment.www_authenticate(get_db(), policy(), request_now())

"""What the views need of the app and the request, in one place: the ``Policy`` built
by ``create_app``, the request's one clock reading, the server's signing and token
keys (loaded once per process), and the request's charge (§10.2).

Reading the clock once per request and passing ``now`` down makes every check of a
request agree on the time, and lets freezegun tests hit exact boundaries (§4.2.1).
"""

from __future__ import annotations

from flask import current_app, g, request

from ..clock import now_ms
from ..service import payment
from ..service.payment import Charge
from ..service.policy import Policy
from ..service.signing import ServerKey, key_file_path, read_keys, signer
from ..service.tokenkeys import TokenKeyring
from ..storage.db import get_db

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


def server_keys() -> list[ServerKey]:
    """All signing keys in the file, loaded once per process and lazily, so the
    factory works before ``keyserver init`` has written them."""
    keys = current_app.extensions.get("keyserver.signing_keys")
    if keys is None:
        keys = read_keys(key_file_path(current_app.instance_path,
                                       current_app.config["SIGNING_KEY_FILE"]))
        current_app.extensions["keyserver.signing_keys"] = keys
    return keys


def current_key() -> ServerKey:
    """The key that signs new objects: the file's last."""
    return server_keys()[-1]


def sign(obj: dict) -> dict:
    """Sign ``obj`` as this server with its current key."""
    return signer(policy().server_name, current_key())(obj)


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

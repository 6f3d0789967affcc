"""The client's home folder (``--home`` / ``KEYCLIENT_HOME``, default a per-user
data directory): the state database and one verified chain per keyserver.

Everything in it is private to the user (folder 0700, files 0600)."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Iterator

from .api import KeyserverAPI
from .protocol.encoding import b64decode
from .clock import now_ms
from .protocol.errors import ClientError, InvalidIdentity, VerificationError
from .protocol.identity import check_server_name, is_domain
from .localchain import LocalChain, open_state
from .protocol.signedjson import signature_key_ids, verify_signed_json

SERVERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS servers (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    added_ts INTEGER NOT NULL
)
"""


if TYPE_CHECKING:
    from .wallet import Wallet


def default_home() -> str:
    import platformdirs   # only when no --home is given

    return platformdirs.user_data_dir("keyclient")


#: The limits the client acts on (§12), each a non-negative integer.
LIMITS = ("max_uid_lifetime_ms", "reclaim_grace_ms", "lastentry_max_age_ms",
          "max_keyinit_lifetime_ms", "max_keyinits_per_request")


def check_capabilities(capabilities: object) -> str:
    """The server name of signed capabilities, after checking they are signed by a
    key they publish (whether that key is really the server's is for the chain and
    the notaries to tell), and that what the client acts on has its type: a bad
    field must stop a command at its start, not halfway through."""
    if not isinstance(capabilities, dict):
        raise VerificationError("the capabilities are not a JSON object")
    name = capabilities.get("server_name")
    keys = capabilities.get("sigpubkeys")
    if not isinstance(name, str) or not isinstance(keys, dict):
        raise VerificationError("capabilities without server_name or sigpubkeys")
    try:
        # The name becomes a folder of the home: it must never be a path.
        check_server_name(name)
    except InvalidIdentity as exc:
        raise VerificationError(f"capabilities name {name!r}, which is not a server name"
                                f" ({exc})") from None
    _check_fields(capabilities)
    for key_id in signature_key_ids(capabilities, name):
        if key_id in keys:
            pubkey = b64decode(keys[key_id], "sigpubkey", length=32, error=VerificationError)
            verify_signed_json(capabilities, name, key_id, pubkey)
            return name
    raise VerificationError(f"capabilities of {name} are not signed by a key they list")


def _check_fields(capabilities: dict) -> None:
    def count(value: object) -> bool:
        return type(value) is int and value >= 0

    limits = capabilities.get("limits")
    if not isinstance(limits, dict) or not all(count(limits.get(name)) for name in LIMITS):
        raise VerificationError(f"capabilities without the limits {', '.join(LIMITS)}")
    prices = capabilities.get("token_prices", {})
    if not isinstance(prices, dict) or not all(count(price) for price in prices.values()):
        raise VerificationError("capabilities with token_prices that are not counts")
    uris = capabilities.get("keyinitrepository_uris", [])
    if not isinstance(uris, list) or not all(isinstance(uri, str) for uri in uris):
        raise VerificationError("capabilities with keyinitrepository_uris that are not URLs")


class Home:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self.db = open_state(os.path.join(self.path, "state.sqlite"))
        self.db.execute(SERVERS_SCHEMA)

    def add_server(self, url: str, move: bool = False) -> str:
        """Remember the keyserver at ``url``; return its name.

        A server already known at another URL keeps it unless ``move``: anyone can
        sign capabilities with a server's name, and silently following them would
        point every later command at an impostor."""
        api = KeyserverAPI(url)
        name = check_capabilities(api.capabilities())
        with self.db:
            known = self.db.execute("SELECT url FROM servers WHERE name = ?", (name,)).fetchone()
            if known and known[0] != api.base_url and not move:
                raise ClientError(f"{name} is already known at {known[0]}; if it has moved to"
                                  f" {api.base_url}, add it again with --move")
            self.db.execute(
                "INSERT INTO servers (name, url, added_ts) VALUES (?, ?, ?) ON CONFLICT (name)"
                " DO UPDATE SET url = excluded.url", (name, api.base_url, now_ms()))
        return name

    def servers(self) -> list[tuple[str, str]]:
        return list(self.db.execute("SELECT name, url FROM servers ORDER BY name"))

    @contextlib.contextmanager
    def wallet(self) -> Iterator[Wallet]:
        # Tokens need RSA (cryptography, slow to import): only commands that pay load it.
        from .wallet import Wallet

        wallet = Wallet(os.path.join(self.path, "wallet.sqlite"))
        try:
            yield wallet
        finally:
            wallet.close()

    def chain(self, name: str) -> LocalChain:
        if not is_domain(name):
            raise ClientError(f"{name!r} is not a server name")
        return LocalChain(self.db, os.path.join(self.path, "chains", name), name)

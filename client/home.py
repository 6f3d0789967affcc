"""The client's home folder (``--home`` / ``KEYCLIENT_HOME``, default a per-user
data directory): the state database and one verified chain per keyserver.

Everything in it is private to the user (folder 0700, files 0600)."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Iterator

from .api import KeyserverAPI
from .encoding import b64decode, now_ms
from .errors import VerificationError
from .localchain import LocalChain, open_state
from .signedjson import signature_key_ids, verify_signed_json

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


def check_capabilities(capabilities: dict) -> str:
    """The server name of signed capabilities, after checking they are signed by a
    key they publish. (Whether that key is really the server's is for the chain and
    the notaries to tell.)"""
    name = capabilities.get("server_name")
    keys = capabilities.get("sigpubkeys")
    if not isinstance(name, str) or not isinstance(keys, dict):
        raise VerificationError("capabilities without server_name or sigpubkeys")
    for key_id in signature_key_ids(capabilities, name):
        if key_id in keys:
            pubkey = b64decode(keys[key_id], "sigpubkey", length=32, error=VerificationError)
            verify_signed_json(capabilities, name, key_id, pubkey)
            return name
    raise VerificationError(f"capabilities of {name} are not signed by a key they list")


class Home:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self.db = open_state(os.path.join(self.path, "state.sqlite"))
        self.db.execute(SERVERS_SCHEMA)

    def add_server(self, url: str) -> str:
        """Remember the keyserver at ``url``; return its name."""
        api = KeyserverAPI(url)
        name = check_capabilities(api.capabilities())
        with self.db:
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
        return LocalChain(self.db, os.path.join(self.path, "chains", name), name)

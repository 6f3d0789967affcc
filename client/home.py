"""The client's home folder (``--home`` / ``KEYCLIENT_HOME``, default a per-user
data directory): the state database and one verified chain per keyserver.

Everything in it is private to the user (folder 0700, files 0600)."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Iterator

from .api import KeyserverAPI
from .clock import now_ms
from .protocol.errors import ClientError, VerificationError
from .protocol.identity import is_domain
from .localchain import LocalChain, open_state
from .protocol.signedjson import signature_key_ids, verify_signed_json
from .protocol.wire import Capabilities

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


def check_capabilities(capabilities: Capabilities) -> str:
    """The server name of parsed capabilities, after checking they are signed by a
    key they publish (whether that key is really the server's is for the chain and
    the notaries to tell)."""
    name, raw = capabilities.server_name, capabilities.raw
    for key_id in signature_key_ids(raw, name):
        if key_id in capabilities.sigpubkeys:
            verify_signed_json(raw, name, key_id, capabilities.sigpubkeys[key_id])
            return name
    raise VerificationError(f"capabilities of {name} are not signed by a key they list")


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

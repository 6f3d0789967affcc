"""The client wallet against a server in-process (§10): buying with a voucher,
spending, keeping the tokens of refused or unanswered writes, distrusting the
tokens reserved by a process that died."""

import pytest

from client.protocol.encoding import b64url_decode
from client.protocol.errors import IdentityTaken, TokenSpent, TransportError
from client.session import ServerSession
from client.store.home import Home
from client.store.wallet import NoTokens, Wallet
from client.transport.api import KeyserverAPI
from client.transport.fetcher import HTTPFetcher
from conftest import a_day_later, registration


def session(server, tmp_path):
    """The server in a fresh home: buying checks its token key against the chain."""
    return ServerSession(Home(str(tmp_path / "home")), "example.org", server.url,
                         fetcher=server.fetcher)


@pytest.fixture
def wallet(tmp_path):
    wallet = Wallet(str(tmp_path / "wallet.sqlite"))
    yield wallet
    wallet.close()


def listed(server):
    """The token keys the server's chain lists (§10.4): the ones a client spends under."""
    from keyserver.service import own
    from keyserver.storage import db

    with server.app.app_context():
        return own.current(db.get_db()).token_keys


def test_wallet_buys_spends_and_keeps_unspent_tokens(app_server, wallet, tmp_path):
    api = KeyserverAPI(app_server.url)
    [code] = app_server.vouchers(3)
    with a_day_later():
        assert session(app_server, tmp_path).buy_tokens(wallet, code, 2) == 1
    assert wallet.count("example.org") == {"available": 2}
    alice = registration(app_server.url, "alice@example.org")
    with wallet.spend("example.org", listed(app_server)) as authorization:
        reply = api.create_uid(alice, authorization)
    assert reply.entry.hashchain_pos == 1
    assert wallet.count("example.org") == {"available": 1, "spent": 1}
    # a refused write spends nothing: the token goes back
    with pytest.raises(IdentityTaken):
        with wallet.spend("example.org", listed(app_server)) as authorization:
            api.create_uid(registration(app_server.url, "alice@example.org"), authorization)
    assert wallet.count("example.org") == {"available": 1, "spent": 1}
    # no answer at all: the token's fate is unknown, it is kept but used last
    with pytest.raises(TransportError,
                       match="cannot reach http://127.0.0.1:9: connection refused"):
        with wallet.spend("example.org", listed(app_server)) as authorization:
            KeyserverAPI("http://127.0.0.1:9", HTTPFetcher()).create_uid(alice, authorization)
    assert wallet.count("example.org") == {"unknown": 1, "spent": 1}
    with wallet.spend("example.org", listed(app_server)) as authorization:
        api.create_uid(registration(app_server.url, "bob@example.org"), authorization)
    with pytest.raises(NoTokens, match="keyclient tokens buy"):
        with wallet.spend("example.org", listed(app_server)):
            pass


def test_wallet_marks_a_token_the_server_says_is_spent(app_server, wallet):
    api = KeyserverAPI(app_server.url)
    [raw] = app_server.mint(1)
    token = raw.split('"')[1]
    wallet.add("example.org", [b64url_decode(token)])
    api.create_uid(registration(app_server.url, "carol@example.org"), raw)
    with pytest.raises(TokenSpent):
        with wallet.spend("example.org", listed(app_server)) as authorization:
            api.create_uid(registration(app_server.url, "dave@example.org"), authorization)
    assert wallet.count("example.org") == {"spent": 1}


def test_wallet_reopened_after_a_crash_distrusts_reserved_tokens(tmp_path, app_server):
    path = str(tmp_path / "w.sqlite")
    wallet = Wallet(path)
    [code] = app_server.vouchers(1)
    with a_day_later():
        session(app_server, tmp_path).buy_tokens(wallet, code, 1)
    wallet._take("example.org", listed(app_server))   # as if the process died during the call
    wallet.close()
    reopened = Wallet(path)
    assert reopened.count("example.org") == {"unknown": 1}
    reopened.close()

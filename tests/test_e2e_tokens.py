"""Tokens against a real server process: races for one token and one voucher, and
the client wallet buying, spending and keeping tokens (§10)."""

import subprocess

import pytest
import requests

from client.transport.api import KeyserverAPI
from client.protocol.encoding import b64decode, b64encode
from client.protocol.errors import IdentityTaken, TokenSpent, TransportError
from client.protocol.tokens import parse_spki, prepare_blinded_tokens, token_challenge
from client.session import ServerSession
from client.store.home import Home
from client.store.wallet import NoTokens, Wallet
from conftest import keyserver_command, registration, run_together


def vouchers(server, tokens, count=1):
    result = subprocess.run(keyserver_command("vouchers", "create", "--tokens", str(tokens),
                                              "--count", str(count), "--instance",
                                              str(server.instance)),
                            check=True, capture_output=True, text=True)
    return result.stdout.split()


def test_one_token_raced_by_30_clients_pays_once(live_server):
    url = live_server.url
    [token] = live_server.mint(1)
    letters = "abcdefghiklmnopqrstuvwxyz"
    messages = [registration(url, f"user{letters[i // 25]}{letters[i % 25]}@example.org")
                for i in range(30)]

    def put(index):
        identity = messages[index]["content"]["identity"]
        response = requests.put(f"{url}/v1/users/{identity}",
                                json={"uid_message": messages[index]},
                                headers={"Authorization": token})
        return response.status_code, response.json().get("errcode")

    results = run_together(30, put)
    assert sorted(results, key=str) == [(201, None)] + [(401, "TOKEN_SPENT")] * 29
    assert requests.get(url + "/v1/hashchain/head").json()["pos"] == 1


def test_voucher_worth_10_raced_by_10_clients_asking_5(live_server):
    url = live_server.url
    [code] = vouchers(live_server, 10)
    key = requests.get(url + "/v1/capabilities").json()["token_keys"][0]
    public = parse_spki(b64decode(key["spki"]))
    bodies = [{"voucher": code, "token_key_id": key["key_id"],
               "blinded": [b64encode(p.blinded) for p in prepare_blinded_tokens(
                   public, token_challenge("example.org"), 5)]} for _ in range(10)]

    def ask(index):
        response = requests.post(url + "/v1/tokens/issue", json=bodies[index])
        return response.status_code, response.json()

    results = run_together(10, ask)
    granted = [body for status, body in results if status == 200]
    assert sum(len(body["blind_sigs"]) for body in granted) == 10
    assert sorted(body["remaining"] for body in granted) == [0, 5]
    assert all(body["errcode"] == "VOUCHER_INVALID" for status, body in results if status != 200)


def session(server, tmp_path):
    """The live server in a fresh home: buying checks its token key against the chain."""
    return ServerSession(Home(str(tmp_path / "home")), "example.org", server.url)


@pytest.fixture
def wallet(tmp_path):
    wallet = Wallet(str(tmp_path / "wallet.sqlite"))
    yield wallet
    wallet.close()


def test_wallet_buys_spends_and_keeps_unspent_tokens(live_server, wallet, tmp_path):
    api = KeyserverAPI(live_server.url)
    [code] = vouchers(live_server, 3)
    assert session(live_server, tmp_path).buy_tokens(wallet, code, 2) == 1
    assert wallet.count("example.org") == {"available": 2}
    alice = registration(live_server.url, "alice@example.org")
    with wallet.spend("example.org") as authorization:
        reply = api.create_uid(alice, authorization)
    assert reply.entry.hashchain_pos == 1
    assert wallet.count("example.org") == {"available": 1, "spent": 1}
    # a refused write spends nothing: the token goes back
    with pytest.raises(IdentityTaken):
        with wallet.spend("example.org") as authorization:
            api.create_uid(registration(live_server.url, "alice@example.org"), authorization)
    assert wallet.count("example.org") == {"available": 1, "spent": 1}
    # no answer at all: the token's fate is unknown, it is kept but used last
    with pytest.raises(TransportError):
        with wallet.spend("example.org") as authorization:
            KeyserverAPI("http://127.0.0.1:9").create_uid(alice, authorization)
    assert wallet.count("example.org") == {"unknown": 1, "spent": 1}
    with wallet.spend("example.org") as authorization:
        api.create_uid(registration(live_server.url, "bob@example.org"), authorization)
    with pytest.raises(NoTokens, match="keyclient tokens buy"):
        with wallet.spend("example.org"):
            pass


def test_wallet_marks_a_token_the_server_says_is_spent(live_server, wallet):
    api = KeyserverAPI(live_server.url)
    [raw] = live_server.mint(1)
    token = raw.split('"')[1]
    from client.protocol.encoding import b64url_decode

    wallet.add("example.org", [b64url_decode(token)])
    requests.put(f"{live_server.url}/v1/users/carol@example.org",
                 json={"uid_message": registration(live_server.url, "carol@example.org")},
                 headers={"Authorization": raw}).raise_for_status()
    with pytest.raises(TokenSpent):
        with wallet.spend("example.org") as authorization:
            api.create_uid(registration(live_server.url, "dave@example.org"), authorization)
    assert wallet.count("example.org") == {"spent": 1}


def test_wallet_reopened_after_a_crash_distrusts_reserved_tokens(tmp_path, live_server):
    path = str(tmp_path / "w.sqlite")
    wallet = Wallet(path)
    [code] = vouchers(live_server, 1)
    session(live_server, tmp_path).buy_tokens(wallet, code, 1)
    wallet._take("example.org")   # as if the process died during the call
    wallet.close()
    reopened = Wallet(path)
    assert reopened.count("example.org") == {"unknown": 1}
    reopened.close()

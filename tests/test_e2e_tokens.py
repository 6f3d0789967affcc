"""Tokens against a real server process: races for one token and one voucher (§10).
(The client wallet against a server is in ``test_wallet``, in-process.)"""

import subprocess

import requests

from client.protocol.encoding import b64decode, b64encode
from client.protocol.tokens import parse_spki, prepare_blinded_tokens, token_challenge
from conftest import keyserver_command, registration, run_together


def vouchers(server, tokens, count=1):
    result = subprocess.run(keyserver_command("vouchers", "create", "--tokens", str(tokens),
                                              "--count", str(count), "--instance",
                                              str(server.instance)),
                            check=True, capture_output=True, text=True)
    return [line.split()[0] for line in result.stdout.splitlines()]   # code, then label


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

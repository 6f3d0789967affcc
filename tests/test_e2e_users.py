"""Races against a real server process (§4, §6): the database decides, exactly once."""

import sqlite3
import subprocess

import nacl.signing
import requests

from client.protocol.encoding import b64decode, sha256

from client.clock import now_ms
from client.protocol.hashchain import open_entry
from client.protocol.keys import ed25519_entry
from client.protocol.uidmessage import (build_uid_content, decrypt_uid_message, parse_uid_message,
                               sign_uid_content, update_uid_content)
from conftest import DAY_MS, keyserver_command, run_together

RACERS = 20


def head_hash(url):
    return b64decode(requests.get(url + "/v1/hashchain/head").json()["entry"])[:32]


def new_message(url, identity):
    sigkey, escrow = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    now = now_ms()
    content = build_uid_content(identity, ed25519_entry(sigkey), msgcount=0, not_before_ts=now,
                                not_after_ts=now + 30 * DAY_MS, lastentry=head_hash(url),
                                sigescrow=ed25519_entry(escrow))
    return sign_uid_content(content, sigkey, escrow_key=escrow), sigkey


def race(server, identity, messages):
    """PUT every message at once (one thread and one token each); return the answers."""
    tokens = server.mint(len(messages))

    def put(index):
        response = requests.put(f"{server.url}/v1/users/{identity}",
                                json={"uid_message": messages[index]},
                                headers={"Authorization": tokens[index]})
        return response.status_code, response.json()

    return run_together(len(messages), put)


def check_consistent(server, identity, expected_positions):
    verified = subprocess.run(keyserver_command("chain", "verify", "--instance",
                                                str(server.instance)),
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    conn = sqlite3.connect(server.instance / "keyserver.sqlite")
    chain_len = conn.execute("SELECT count(*) FROM chain").fetchone()[0]
    assert conn.execute("SELECT count(*) FROM uids").fetchone()[0] == chain_len
    assert conn.execute("SELECT max(pos) + 1 FROM chain").fetchone()[0] == chain_len
    positions = [row[0] for row in conn.execute(
        "SELECT pos FROM history WHERE identity = ? ORDER BY seq", (identity,))]
    assert positions == expected_positions
    history_len, pos = conn.execute("SELECT history_len, pos FROM identities WHERE identity = ?",
                                    (identity,)).fetchone()
    assert history_len == len(expected_positions) and pos == expected_positions[-1]
    check_keyhashes(conn)


def check_keyhashes(conn):
    """``keyhashes`` maps exactly the keys of accepted messages to their identity: every
    identity's current sigkey and sigescrow, and the keys its earlier messages named
    (a key stays its identity's forever); no key of a refused message, nothing more."""
    stored = dict(conn.execute("SELECT keyhash, identity FROM keyhashes"))
    expected = {}
    for identity, sigkey, sigescrow in conn.execute(
            "SELECT identity, sigkey, sigescrow FROM identities").fetchall():
        for key in (sigkey, sigescrow):
            if key is not None:
                assert stored.get(sha256(key)) == identity, identity
        for (pos,) in conn.execute("SELECT pos FROM history WHERE identity = ?",
                                   (identity,)).fetchall():
            entry, encrypted = conn.execute(
                "SELECT c.entry, u.encrypted FROM chain c JOIN uids u ON u.pos = c.pos"
                " WHERE c.pos = ?", (pos,)).fetchone()
            message = parse_uid_message(decrypt_uid_message(encrypted,
                                                            open_entry(entry, identity)))
            expected.update((keyhash, identity) for keyhash in message.key_hashes)
    assert stored == expected


def test_racing_creates_exactly_one_wins(live_server):
    url = live_server.url
    messages = [new_message(url, "alice@example.org")[0] for _ in range(RACERS)]
    answers = race(live_server, "alice@example.org", messages)
    statuses = sorted(status for status, _ in answers)
    assert statuses == [201] + [409] * (RACERS - 1), answers
    assert {body["errcode"] for status, body in answers if status == 409} == {"IDENTITY_TAKEN"}
    [winner] = [body for status, body in answers if status == 201]
    assert winner["entry"]["hashchain_pos"] == 1
    check_consistent(live_server, "alice@example.org", [1])


def test_racing_updates_with_same_msgcount_exactly_one_wins(live_server):
    url = live_server.url
    first, sigkey = new_message(url, "alice@example.org")
    assert requests.put(f"{url}/v1/users/alice@example.org", json={"uid_message": first},
                        headers={"Authorization": live_server.mint(1)[0]}).status_code == 201
    previous = parse_uid_message(first)
    updates = []
    for _ in range(RACERS):
        new_key = nacl.signing.SigningKey.generate()
        now = now_ms()
        content = update_uid_content(previous, ed25519_entry(new_key), not_before_ts=now,
                                     not_after_ts=now + 30 * DAY_MS, lastentry=head_hash(url))
        updates.append(sign_uid_content(content, new_key, previous_sigkey=sigkey))
    answers = race(live_server, "alice@example.org", updates)
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] + [409] * (RACERS - 1), answers
    assert {body["errcode"] for status, body in answers if status == 409} == {"MSGCOUNT_MISMATCH"}
    check_consistent(live_server, "alice@example.org", [1, 2])


def test_racing_different_identities_all_win_with_dense_positions(live_server):
    url = live_server.url
    identities = [f"user{letter}@example.org" for letter in "abcdefghiklmnopqrstuvwxyz"[:RACERS]]
    tokens = live_server.mint(RACERS)

    def register(index, message):
        response = requests.put(f"{url}/v1/users/{identities[index]}",
                                json={"uid_message": message},
                                headers={"Authorization": tokens[index]})
        return response.status_code, response.json()

    answers = run_together(RACERS, register,
                           prepare=lambda index: new_message(url, identities[index])[0])
    results = dict(zip(identities, answers))
    assert all(status == 201 for status, _ in results.values()), results
    positions = sorted(body["entry"]["hashchain_pos"] for _, body in results.values())
    assert positions == list(range(1, RACERS + 1))
    for identity in identities:
        check_consistent(live_server, identity, [results[identity][1]["entry"]["hashchain_pos"]])

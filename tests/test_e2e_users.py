"""Races against a real server process (§4, §6): the database decides, exactly once."""

import nacl.signing
import requests

from client.clock import now_ms
from client.protocol.keys import ed25519_entry
from client.protocol.uidmessage import parse_uid_message, sign_uid_content, update_uid_content
from conftest import DAY_MS, RACERS, check_consistent, head_hash, new_message, race, run_together


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

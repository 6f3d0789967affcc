"""The Merkle tree over the chain on the server (§8, §12): stored as the chain grows,
checkpoints signed by the log key the chain binds, and inclusion and consistency
proofs that check against them, with §8's edge cases."""

import pytest
from click.testing import CliRunner

from client.protocol.checkpoint import parse_note, verify_checkpoint
from client.protocol.encoding import b64decode
from client.protocol.encoding import sha256
from client.protocol.merkle import (MemoryTree, check_consistency, check_inclusion, leaf_hash,
                                    tree_root)
from client.protocol.note import parse_verifier_key
from client.protocol.wire import format_log_head, parse_log_head
from keyserver.cli import main
from conftest import at, now_ms


def worker(instance):
    result = CliRunner().invoke(main, ["worker", "--once", "--instance", str(instance)])
    assert result.exit_code == 0, result.output
    return result.output


def entries(client):
    return [b64decode(e) for e in client.get("/v1/hashchain?count=1000").json["entries"]]


def checkpoint(client, query=""):
    response = client.get(f"/v1/hashchain/checkpoint{query}")
    if response.status_code != 200:
        return response.status_code, response.json["errcode"]
    assert response.mimetype == "text/plain"
    log_vkey = parse_verifier_key(client.get("/v1/capabilities").json["log_vkey"])
    return verify_checkpoint(parse_note(response.get_data(as_text=True)), log_vkey)


def test_the_worker_signs_checkpoints_of_the_stored_tree(client, users, instance):
    assert checkpoint(client) == (404, "NOT_FOUND")
    head = client.get("/v1/hashchain/head").json
    assert (head["tree_size"], head["root_hash"], head["checkpoint"]) == (None, None, None)
    t = now_ms()
    with at(t):
        assert "checkpoint of tree size 1" in worker(instance)
    users.register("alice@example.org")
    users.register("bob@example.org")
    t += 10_000
    with at(t):
        assert "checkpoint of tree size 3" in worker(instance)
    made = checkpoint(client)
    assert (made.tree_size, made.root_hash) == (3, tree_root(3, MemoryTree(entries(client))))
    head = client.get("/v1/hashchain/head").json
    assert head["tree_size"] == 3 and b64decode(head["root_hash"]) == made.root_hash
    assert format_log_head(parse_log_head(head)) == head
    assert head["checkpoint"] == client.get("/v1/hashchain/checkpoint").get_data(as_text=True)
    # At most once per CHECKPOINT_INTERVAL, and only when the chain grew.
    users.register("carol@example.org")
    with at(t + 10_000 - 1):
        assert "checkpoint" not in worker(instance)
    with at(t + 10_000):
        assert "checkpoint of tree size 4" in worker(instance)
        assert "checkpoint" not in worker(instance)


@pytest.fixture
def logged(client, users, instance):
    """Checkpoints of sizes 1, 3 and 6."""
    t = now_ms()
    with at(t):
        worker(instance)
    users.register("alice@example.org")
    users.register("bob@example.org")
    with at(t + 20_000):
        worker(instance)
    for name in ("carol", "dave", "erin"):
        users.register(f"{name}@example.org")
    with at(t + 40_000):
        worker(instance)
    return MemoryTree(entries(client))


def test_checkpoints_by_size_position_and_quorum(client, logged):
    assert checkpoint(client).tree_size == 6
    assert checkpoint(client, "?tree_size=3").tree_size == 3
    assert checkpoint(client, "?tree_size=2") == (404, "NOT_FOUND")
    assert checkpoint(client, "?covering=0").tree_size == 1
    assert checkpoint(client, "?covering=1").tree_size == 3
    assert checkpoint(client, "?covering=3").tree_size == 6
    assert checkpoint(client, "?covering=6") == (404, "NOT_FOUND")
    assert checkpoint(client, "?quorum=0").tree_size == 6
    assert checkpoint(client, "?quorum=1") == (404, "NOT_FOUND")   # no witness yet
    for bad in ("?tree_size=-1", "?covering=x", "?tree_size=1&covering=0", "?quorum=01"):
        assert checkpoint(client, bad) == (400, "BAD_REQUEST")


def test_inclusion_proofs_check_against_the_checkpoints(client, logged):
    for size in (3, 6):
        root = checkpoint(client, f"?tree_size={size}").root_hash
        for index in range(size):
            proof = client.get(f"/v1/hashchain/proof/inclusion?index={index}&tree_size={size}")
            body = proof.json
            assert (body["leaf_index"], body["tree_size"]) == (index, size)
            check_inclusion(logged.node(0, index), index, size, root,
                            [b64decode(h) for h in body["hashes"]])


def test_consistency_proofs_and_their_edge_cases(client, logged):
    roots = {size: checkpoint(client, f"?tree_size={size}").root_hash for size in (1, 3, 6)}
    for first, second in ((1, 3), (3, 6), (1, 6), (0, 6), (6, 6), (3, 3)):
        body = client.get(f"/v1/hashchain/proof/consistency?first={first}&second={second}").json
        assert (body["first"], body["second"]) == (first, second)
        hashes = [b64decode(h) for h in body["hashes"]]
        assert (hashes == []) == (first in (0, second))
        check_consistency(first, second, roots.get(first, sha256(b"")), roots[second], hashes)


@pytest.mark.parametrize("query", [
    "inclusion?index=3&tree_size=3", "inclusion?index=0&tree_size=7",
    "inclusion?tree_size=3", "inclusion?index=0&tree_size=1.0",
    "consistency?first=4&second=3", "consistency?first=0&second=7",
    "consistency?first=1", "consistency?first=-1&second=3",
])
def test_proofs_beyond_the_tree_are_bad_requests(client, logged, query):
    response = client.get(f"/v1/hashchain/proof/{query}")
    assert (response.status_code, response.json["errcode"]) == (400, "BAD_REQUEST")


def test_a_lookup_carries_the_inclusion_proof_of_its_entry(client, logged, users):
    body = client.get("/v1/users/bob@example.org").json
    proof, head = body["leaf_proof"], body["head"]
    pos = body["uid_message_reply"]["entry"]["hashchain_pos"]
    entry = b64decode(body["uid_message_reply"]["entry"]["hashchain_entry"])
    assert (proof["leaf_index"], proof["tree_size"]) == (pos, head["tree_size"])
    check_inclusion(leaf_hash(entry), pos, head["tree_size"], b64decode(head["root_hash"]),
                    [b64decode(h) for h in proof["hashes"]])
    users.register("frank@example.org")                  # not in a checkpoint yet
    assert client.get("/v1/users/frank@example.org").json["leaf_proof"] is None

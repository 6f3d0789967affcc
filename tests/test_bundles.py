"""Private reply fetching (§5.1): the pure choice of bundles (``client.trust.bundles``)
and, end to end, that a lookup or a KeyInit fetch never tells the server whom it
is for."""

import json
import random

import pytest

from client.protocol.encoding import b64encode, b64url_encode
from client.protocol.errors import VerificationError
from client.protocol.wire import BUNDLE_SIZE, ReplyBundle, ReplyEntry, UIDMessageReply
from client.lookup import fetch_bundles
from client.trust.bundles import DECOYS, check_bundle, choose_bundles
from conftest import keyclient, registered_home

ALICE = "alice@example.org"


# --- the choice ----------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(20))
def test_each_needed_bundle_goes_with_decoys_in_a_shuffled_batch(seed):
    cached = {0, 3, 7}
    batch = choose_bundles({5, 9}, cached, 40, random.Random(seed))
    assert len(batch) == len(set(batch)) == 2 + 2 * DECOYS
    assert {5, 9} <= set(batch) and not set(batch) & cached
    assert all(0 <= bundle <= 40 for bundle in batch)


def test_the_batch_is_random_and_shuffled():
    batches = [choose_bundles({5}, set(), 40, random.Random(seed)) for seed in range(30)]
    assert len({frozenset(batch) for batch in batches}) > 1
    assert len({batch.index(5) for batch in batches}) > 1


def test_all_uncached_bundles_when_fewer_remain():
    batch = choose_bundles({2}, {0, 1}, 5, random.Random(1))
    assert sorted(batch) == [2, 3, 4, 5]


def test_cached_bundles_are_never_fetched():
    assert choose_bundles({1, 2}, {1, 2}, 9, random.Random(1)) == []
    assert 1 not in choose_bundles({1, 2}, {1}, 9, random.Random(1))


def test_a_needed_bundle_beyond_the_head_is_a_bug():
    with pytest.raises(ValueError):
        choose_bundles({6}, set(), 5, random.Random(1))


# --- the check against the chain ------------------------------------------------------

def entry(pos: int) -> bytes:
    return pos.to_bytes(153, "big")


def bundle(number: int, count: int, entries=entry) -> ReplyBundle:
    first = number * BUNDLE_SIZE
    return ReplyBundle(number, tuple(
        UIDMessageReply(ReplyEntry(bytes(80), entries(pos), pos, 1), {}, {})
        for pos in range(first, first + count)))


def test_replies_past_the_local_chain_are_left_out():
    assert len(check_bundle(bundle(1, 200), BUNDLE_SIZE + 100, entry)) == 100
    assert len(check_bundle(bundle(0, BUNDLE_SIZE), 10 * BUNDLE_SIZE, entry)) == BUNDLE_SIZE


def test_a_bundle_short_of_the_chain_is_refused():
    with pytest.raises(VerificationError, match="short of the chain's 355"):
        check_bundle(bundle(1, 90), BUNDLE_SIZE + 100, entry)


def test_a_reply_naming_another_entry_is_refused():
    forged = bundle(0, 5, lambda pos: entry(pos + (pos == 3)))
    with pytest.raises(VerificationError, match="position 3 names another entry"):
        check_bundle(forged, 5, entry)


# --- the fetch of a batch --------------------------------------------------------------

class FakeChain:
    length = 6 * BUNDLE_SIZE

    def read(self, start, end):
        return b"".join(entry(pos) for pos in range(start, min(end, self.length)))


class FakeAPI:
    """Serves ``bundle(B, 256)`` for every B once all ``together`` requests are in
    (so a batch fetched one bundle after the other would never finish); records the
    threads that closed their connections."""

    def __init__(self, together):
        import threading

        self.arrived = threading.Barrier(together, timeout=10)
        self.fetcher = self
        self.closed = []

    def fetch_bundle(self, number):
        self.arrived.wait()
        return bundle(number, BUNDLE_SIZE)

    def close(self):
        import threading

        self.closed.append(threading.get_ident())


def test_a_batch_is_fetched_at_once_and_kept_in_its_order():
    import threading

    batch = [4, 0, 5, 2, 1]
    api = FakeAPI(len(batch))
    replies = fetch_bundles(api, FakeChain(), batch)
    assert [reply.entry.hashchain_pos // BUNDLE_SIZE for reply in replies[::BUNDLE_SIZE]] == batch
    assert len(replies) == len(batch) * BUNDLE_SIZE
    # Each helper thread closed its connection; the caller keeps its own.
    assert len(set(api.closed)) == len(batch) - 1
    assert threading.get_ident() not in api.closed


@pytest.mark.parametrize("bad", [4, 1])      # in the caller's share, or a helper's
def test_a_bundle_that_fails_fails_the_batch(bad):
    class Failing(FakeAPI):
        def fetch_bundle(self, number):
            answer = super().fetch_bundle(number)    # all five arrive together
            if number == bad:
                raise VerificationError(f"bundle {bad} is malformed")
            return answer

    with pytest.raises(VerificationError, match=f"bundle {bad} is malformed"):
        fetch_bundles(Failing(5), FakeChain(), [4, 0, 5, 2, 1])


# --- end to end: what the server sees ---------------------------------------------------

@pytest.fixture
def requests_seen(app_server, monkeypatch):
    """Every ``(method, target, body)`` the client sends the in-process server."""
    seen = []
    send = app_server.fetcher.send

    def recording(method, target, headers, body):
        seen.append((method, target, body or b""))
        return send(method, target, headers, body)

    monkeypatch.setattr(app_server.fetcher, "send", recording)
    return seen


def identity_rows(app_server, identity: str) -> list[tuple[int, bytes, bytes]]:
    """``(pos, entry, UIDIndex)`` of each of ``identity``'s entries, from the server."""
    from keyserver.storage.db import get_db

    with app_server.app.app_context():
        return get_db().conn.execute(
            "SELECT c.pos, c.entry, u.uid_index FROM chain c JOIN uids u ON u.pos = c.pos"
            " JOIN history h ON h.pos = c.pos WHERE h.identity = ?", (identity,)).fetchall()


def positions(app_server, identity: str) -> list[int]:
    return [pos for pos, _, _ in identity_rows(app_server, identity)]


def revealing(app_server, identity: str) -> list[str]:
    """What would name ``identity`` in a request: itself, its UIDIndex and HashID
    (each entry's, in both base64 alphabets and hex)."""
    rows = identity_rows(app_server, identity)
    assert rows
    values = [identity, identity.split("@")[0]]
    for _, chain_entry, uid_index in rows:
        for value in (chain_entry[41:73], uid_index):
            values += [b64url_encode(value), b64encode(value), value.hex()]
    return values


def bundles_fetched(seen) -> list[int]:
    return [int(target.rsplit("/", 1)[1]) for _, target, _ in seen
            if target.startswith("/v1/uids/bundle/")]


def check_private(seen, revealing_values, allowed: str = ""):
    """No request path or body holds one of ``revealing_values`` (but ``allowed``,
    the path that may name a sigkeyhash, is not searched)."""
    for _, target, body in seen:
        for value in revealing_values:
            assert target == allowed or value not in target, (target, value)
            assert value.encode() not in body, (target, value)


@pytest.fixture
def long_chain(app_server, tmp_path, cheap_keystore):
    """Alice (registered, one KeyInit published) among seven bundles of entries."""
    app_server.load_chain(3 * BUNDLE_SIZE)
    home = registered_home(app_server, tmp_path, tokens=4)
    assert keyclient(home, "register", ALICE, "--yes").exit_code == 0
    assert keyclient(home, "keyinit", "publish", ALICE, "-n", "1").exit_code == 0
    app_server.load_chain(3 * BUNDLE_SIZE + 40)
    return app_server


def test_a_lookup_names_nobody_and_fetches_decoys(long_chain, requests_seen, tmp_path):
    bob = tmp_path / "bob"
    assert keyclient(bob, "server", "add", long_chain.url).exit_code == 0
    result = keyclient(bob, "lookup", ALICE)
    assert result.exit_code == 0, result.output
    check_private(requests_seen, revealing(long_chain, ALICE))
    fetched = bundles_fetched(requests_seen)
    assert not any(target.startswith("/v1/uids/") and "/bundle/" not in target
                   for _, target, _ in requests_seen)
    # The server's own bundle (0) with 4 decoys at the sync, then Alice's, unless it
    # was among them, with 4 more (all that remain).
    alice_bundle = positions(long_chain, ALICE)[0] // BUNDLE_SIZE
    assert {0, alice_bundle} <= set(fetched) and len(set(fetched[:5])) == 5
    assert len(set(fetched)) == (5 if alice_bundle in fetched[:5] else 7)
    head_bundle = 6
    assert all(fetched.count(b) == 1 for b in set(fetched) if b != head_bundle)

    # A second lookup fetches only what is not cached yet (never a complete bundle again).
    requests_seen.clear()
    assert keyclient(bob, "lookup", ALICE).exit_code == 0
    assert set(bundles_fetched(requests_seen)) <= set(range(7)) - set(fetched) | {head_bundle}


def test_a_keyinit_fetch_names_only_the_sigkeyhash(long_chain, requests_seen, tmp_path):
    bob = tmp_path / "bob"
    assert keyclient(bob, "server", "add", long_chain.url).exit_code == 0
    result = keyclient(bob, "keyinit", "fetch", ALICE)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["identity"] == ALICE
    [fetch] = [target for _, target, _ in requests_seen if target.endswith("/fetch")]
    check_private(requests_seen, revealing(long_chain, ALICE), allowed=fetch)
    fetched = set(bundles_fetched(requests_seen))
    assert len(fetched) >= 5 and positions(long_chain, ALICE)[0] // BUNDLE_SIZE in fetched

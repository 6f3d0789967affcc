"""The home's state database (``client.store.home``): one schema, built by
migrations when the home opens; a home written before the schema had a version
opens with all its data."""

import json
import sqlite3

import pytest

import client.store.home as home_module
from client.protocol.errors import ClientError
from client.protocol.wire import ReplyEntry, format_uid_message_reply, parse_uid_message_reply
from client.store.home import MIGRATIONS, Home
from client.trust.continuity import Shown
from client.trust.ordering import RepliesOutOfOrder, check_ordered

TABLES = {"servers", "chains", "found", "scanned", "own_replies", "keyinit_msgcounts", "alerts",
          "held_replies", "evidence", "first_seen", "shown_keys", "complete_bundles",
          "key_documents", "notaries", "corroborated", "settings",
          "checkpoints", "merkle_trees", "witnesses", "witnessing"}
REPLY = format_uid_message_reply(ReplyEntry(bytes(72), bytes(153), 1, 1000),
                                 {"example.org": {"ed25519:a": "sig"}})

#: What the client before schema versions created, each table on first use
#: (``keyinit_msgcounts`` only once a KeyInit was published: this home never did).
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS chains (
    server TEXT PRIMARY KEY,
    length INTEGER NOT NULL,
    last_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS found (
    server TEXT NOT NULL,
    identity TEXT NOT NULL,
    pos INTEGER NOT NULL,
    uid_hash BLOB NOT NULL,
    PRIMARY KEY (server, identity, pos)
);
CREATE TABLE IF NOT EXISTS scanned (
    server TEXT NOT NULL,
    identity TEXT NOT NULL,
    upto INTEGER NOT NULL,
    PRIMARY KEY (server, identity)
);
CREATE TABLE IF NOT EXISTS servers (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    added_ts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS own_replies (
    server TEXT NOT NULL,
    identity TEXT NOT NULL,
    pos INTEGER NOT NULL,
    msgcount INTEGER NOT NULL,
    reply TEXT NOT NULL,
    PRIMARY KEY (server, identity, pos)
);
"""


def tables(db):
    return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def version(db):
    return db.execute("PRAGMA user_version").fetchone()[0]


def test_a_new_home_has_the_whole_schema(tmp_path):
    home = Home(str(tmp_path / "home"))
    assert tables(home.db) == TABLES
    assert version(home.db) == len(MIGRATIONS)


def test_a_home_of_the_old_schema_opens_with_its_data(tmp_path):
    path = tmp_path / "home"
    path.mkdir()
    with sqlite3.connect(path / "state.sqlite") as db:
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO servers VALUES ('example.org', 'http://ks.test', 5)")
        db.execute("INSERT INTO chains VALUES ('example.org', 0, ?)", (bytes(32),))
        db.execute("INSERT INTO found VALUES ('example.org', 'a@example.org', 1, ?)", (b"h",))
        db.execute("INSERT INTO scanned VALUES ('example.org', 'a@example.org', 2)")
        db.execute("INSERT INTO own_replies VALUES ('example.org', 'a@example.org', 1, 0, ?)",
                   (json.dumps(REPLY),))
    db.close()
    home = Home(str(path))
    assert version(home.db) == len(MIGRATIONS) and tables(home.db) == TABLES
    assert home.servers() == [("example.org", "http://ks.test")]
    assert home.own_replies("example.org") == [("a@example.org", 1,
                                                 parse_uid_message_reply(REPLY))]
    assert list(home.db.execute("SELECT * FROM found")) == [
        ("example.org", "a@example.org", 1, b"h")]
    assert list(home.db.execute("SELECT * FROM scanned")) == [
        ("example.org", "a@example.org", 2)]
    assert home.reserve_msgcounts("example.org", bytes(32), 2, 10) == 10   # the new table
    # Our own replies count for the ordering rule from the start (§7.3).
    assert list(home.db.execute("SELECT server, pos, ts FROM held_replies")) == [
        ("example.org", 1, 1000)]
    # A chain verified before: counts as first received when the home was migrated.
    assert list(home.db.execute("SELECT * FROM first_seen")) == []       # (length 0)
    home.db.close()
    assert version(Home(str(path)).db) == len(MIGRATIONS)     # opened again: nothing to do


def test_a_home_of_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "home"
    path.mkdir()
    with sqlite3.connect(path / "state.sqlite") as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(ClientError, match="newer than this keyclient's"):
        Home(str(path))


def test_a_failing_migration_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(home_module, "MIGRATIONS",
                        [*MIGRATIONS, "CREATE TABLE extra (x); CREATE TABLE broken ("])
    with pytest.raises(sqlite3.OperationalError):
        Home(str(tmp_path / "home"))
    db = sqlite3.connect(tmp_path / "home" / "state.sqlite")
    assert version(db) == len(MIGRATIONS) and "extra" not in tables(db)


def test_a_known_server_moves_only_when_asked(tmp_path):
    home = Home(str(tmp_path / "home"))
    home.remember_server("example.org", "http://a.test", 1)
    with pytest.raises(ClientError, match="already known at http://a.test"):
        home.remember_server("example.org", "http://b.test", 2)
    home.remember_server("example.org", "http://b.test", 2, move=True)
    assert home.servers() == [("example.org", "http://b.test")]


def test_keyinit_msgcounts_only_grow(tmp_path):
    home = Home(str(tmp_path / "home"))
    assert home.reserve_msgcounts("example.org", b"k", 3, 100) == 100
    assert home.reserve_msgcounts("example.org", b"k", 1, 50) == 103      # clock went back
    assert home.reserve_msgcounts("example.org", b"k", 1, 500) == 500
    assert home.reserve_msgcounts("other.org", b"k", 1, 7) == 7


def test_replies_are_kept_as_sent(tmp_path):
    home = Home(str(tmp_path / "home"))
    reply = parse_uid_message_reply(REPLY)
    home.record_replies("example.org", "a@example.org", [(1, 0, reply)])
    other = parse_uid_message_reply({**REPLY, "signatures": {}})
    home.record_replies("example.org", "a@example.org", [(1, 0, other)])
    assert home.own_replies("example.org")[0][2].raw == REPLY          # first one kept
    home.record_replies("example.org", "a@example.org", [(1, 0, other)], replace=True)
    assert home.own_replies("example.org")[0][2].raw == other.raw


def reply_at(pos, ts):
    return parse_uid_message_reply({"entry": {**REPLY["entry"], "hashchain_pos": pos, "ts": ts},
                                    "signatures": REPLY["signatures"]})


def test_held_replies_around_a_range_are_what_can_contradict_it(tmp_path):
    home = Home(str(tmp_path / "home"))
    home.hold_replies("example.org", [reply_at(1, 100), reply_at(3, 300), reply_at(5, 500),
                                      reply_at(9, 900)])
    home.hold_replies("example.org", [reply_at(3, 300)])                  # kept once

    def around(first, last, server="example.org"):
        return [r.entry.hashchain_pos for r in home.held_around(server, first, last)]

    assert around(4, 4) == [3, 5]
    assert around(3, 6) == [3, 5, 1, 9]
    assert around(10, 12) == [9] and around(0, 0) == [1]
    assert around(4, 4, "other.org") == []                              # per server
    check_ordered([reply_at(4, 300), *home.held_around("example.org", 4, 4)])  # equal times
    with pytest.raises(RepliesOutOfOrder) as caught:
        check_ordered([reply_at(4, 299), *home.held_around("example.org", 4, 4)])
    assert [r.entry.hashchain_pos for r in caught.value.replies] == [3, 4]
    with pytest.raises(RepliesOutOfOrder) as caught:
        check_ordered([reply_at(4, 501), *home.held_around("example.org", 4, 4)])
    assert [r.entry.hashchain_pos for r in caught.value.replies] == [4, 5]
    home.record_evidence("example.org", "why", [reply_at(3, 300), reply_at(4, 299)], 7)
    [(ts, what, replies, _)] = home.evidence("example.org")
    assert (ts, what, [r["entry"]["ts"] for r in replies]) == (7, "why", [300, 299])
    # Caught again, the same replies are kept once; other ones are new evidence.
    home.record_evidence("example.org", "why again", [reply_at(3, 300), reply_at(4, 299)], 8)
    home.record_evidence("example.org", "other", [reply_at(4, 299), reply_at(5, 1)], 9)
    assert [(ts, what) for ts, what, _, _ in home.evidence("example.org")] == [(7, "why"),
                                                                           (9, "other")]


def test_the_message_last_shown_of_each_looked_up_identity(tmp_path):
    home = Home(str(tmp_path / "home"))
    assert home.shown("example.org", "bob@example.org") is None
    home.record_shown("example.org", "bob@example.org", Shown(3, "1a2b"), 5)
    home.record_shown("other.org", "bob@example.org", Shown(9, "3c4d"), 5)
    home.record_shown("example.org", "bob@example.org", Shown(7, "5e6f"), 6)
    assert home.shown("example.org", "bob@example.org") == Shown(7, "5e6f")
    assert home.shown("other.org", "bob@example.org") == Shown(9, "3c4d")
    assert home.shown("example.org", "carol@example.org") is None



def test_a_bundle_is_cached_once_every_position_is_held(tmp_path):
    """Held replies are the cache of §5.1: the head's partial bundle is not complete."""
    home = Home(str(tmp_path / "home"))
    home.hold_replies("example.org", [reply_at(pos, 1) for pos in range(256 + 100)])
    assert home.complete_bundles("example.org") == {0}
    home.hold_replies("example.org", [reply_at(pos, 1) for pos in range(256 + 100, 512)])
    assert home.complete_bundles("example.org") == {0, 1}
    assert home.complete_bundles("other.org") == set()
    held = home.held_at("example.org", [3, 400, 600])
    assert list(held) == [3, 400] and held[400].entry.hashchain_pos == 400


def test_a_home_holding_replies_before_the_bundle_cache_finds_its_complete_bundles(tmp_path):
    """The migration that keeps complete bundles in a table of their own counts what
    the home held before: a complete bundle is not fetched again."""
    path = tmp_path / "home"
    path.mkdir()
    cache_step = next(i for i, step in enumerate(MIGRATIONS) if "complete_bundles" in step)
    with sqlite3.connect(path / "state.sqlite") as db:
        for step in MIGRATIONS[:cache_step]:
            db.executescript(step)
        db.execute(f"PRAGMA user_version = {cache_step}")
        db.executemany("INSERT INTO held_replies VALUES (?, ?, ?, ?)",
                       [(server, pos, 1, "{}") for server, count in
                        (("example.org", 256 + 255), ("other.org", 255)) for pos in range(count)])
    db.close()
    home = Home(str(path))
    assert home.complete_bundles("example.org") == {0}
    assert home.complete_bundles("other.org") == set()
    home.hold_replies("example.org", [reply_at(256 + 255, 2)])
    assert home.complete_bundles("example.org") == {0, 1}

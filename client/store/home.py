"""The client's home folder (``--home`` / ``KEYCLIENT_HOME``, default a per-user
data directory): the state database, one verified chain per keyserver (§7.5), the
wallet (§10) and the keystore. The state database also keeps the replies for the
user's own identities (§7.5), the alerts about entries of them the user did not
make (§7.3 "Monitoring"), the message of each looked-up identity last shown (key
continuity), the evidence against servers caught cheating, the last checkpoint
verified of each server and its chain's Merkle tree (§8), the KeyInit msgcounts
used (§9), each server's newest key document, the trusted notaries and
the server keys they corroborated (§11), and each server's witnesses, quorum and
the largest checkpoint a quorum of them cosigned (§8.1).

Everything in it is private to the user (folder 0700, files 0600). The state
database has one schema, built by ``MIGRATIONS`` when the home opens: step ``n``
takes a database at ``PRAGMA user_version`` ``n`` to ``n + 1`` in one transaction.
Step 0 creates every table if it is missing, so it also adopts a home written
before the schema had a version (whose tables each module created on first use)
with all its data.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
from typing import TYPE_CHECKING, Collection, Iterable, Iterator

from ..protocol.errors import ClientError
from ..protocol.identity import is_domain
from ..protocol.keyquery import Notary
from ..protocol.note import ALG_COSIGNATURE, VerifierKey, format_verifier_key, parse_verifier_key
from ..protocol.serverkeys import KeyDocument, parse_key_document
from ..protocol.wire import BUNDLE_SIZE, UIDMessageReply, parse_uid_message_reply
from ..trust.continuity import Shown
from ..trust.monitor import Alert
from .localchain import LocalChain

if TYPE_CHECKING:
    from .wallet import Wallet

MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS servers (
        name TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        added_ts INTEGER NOT NULL
    );
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
    CREATE TABLE IF NOT EXISTS own_replies (
        server TEXT NOT NULL,
        identity TEXT NOT NULL,
        pos INTEGER NOT NULL,
        msgcount INTEGER NOT NULL,
        reply TEXT NOT NULL,
        PRIMARY KEY (server, identity, pos)
    );
    CREATE TABLE IF NOT EXISTS keyinit_msgcounts (
        server TEXT NOT NULL,
        sigkeyhash BLOB NOT NULL,
        msgcount INTEGER NOT NULL,
        PRIMARY KEY (server, sigkeyhash)
    );
    """,
    # Every verified reply held from a server (§7.3 "ordered"), and the evidence of
    # a server caught cheating.
    """
    CREATE TABLE held_replies (
        server TEXT NOT NULL,
        pos INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        reply TEXT NOT NULL,
        PRIMARY KEY (server, pos, ts)
    );
    INSERT OR IGNORE INTO held_replies (server, pos, ts, reply)
        SELECT server, pos, json_extract(reply, '$.entry.ts'), reply FROM own_replies;
    CREATE TABLE evidence (
        id INTEGER PRIMARY KEY,
        server TEXT NOT NULL,
        recorded_ts INTEGER NOT NULL,
        what TEXT NOT NULL,
        replies TEXT NOT NULL
    );
    """,
    # When the client first received the entries up to each verified length (§7.3
    # ``F``). A chain verified before this step counts as received now: that bounds
    # the time of its entries no looser than their own (min(ts, F + 5 min)).
    """
    CREATE TABLE first_seen (
        server TEXT NOT NULL,
        end_pos INTEGER NOT NULL,
        received_ts INTEGER NOT NULL,
        PRIMARY KEY (server, end_pos)
    );
    INSERT INTO first_seen (server, end_pos, received_ts)
        SELECT server, length, CAST(strftime('%s', 'now') AS INTEGER) * 1000 FROM chains
        WHERE length > 0;
    """,
    # Entries of our own identities that this client did not write (§7.3
    # "Monitoring"), kept until the user acknowledges each.
    """
    CREATE TABLE alerts (
        server TEXT NOT NULL,
        identity TEXT NOT NULL,
        pos INTEGER NOT NULL,
        kind TEXT NOT NULL,
        fingerprint TEXT,
        found_ts INTEGER NOT NULL,
        acknowledged_ts INTEGER,
        PRIMARY KEY (server, identity, pos)
    );
    """,
    # The message of each looked-up identity that the user was last shown (key
    # continuity: a later lookup announces the entries since).
    """
    CREATE TABLE shown_keys (
        server TEXT NOT NULL,
        identity TEXT NOT NULL,
        pos INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        shown_ts INTEGER NOT NULL,
        PRIMARY KEY (server, identity)
    );
    """,
    # The bundles (§5.1) with a held reply for every position: the cache, kept as
    # bundles are completed instead of counted over every held reply at each lookup.
    f"""
    CREATE TABLE complete_bundles (
        server TEXT NOT NULL,
        bundle INTEGER NOT NULL,
        PRIMARY KEY (server, bundle)
    );
    INSERT INTO complete_bundles (server, bundle)
        SELECT server, pos / {BUNDLE_SIZE} FROM held_replies GROUP BY server, pos / {BUNDLE_SIZE}
        HAVING COUNT(DISTINCT pos) = {BUNDLE_SIZE};
    """,
    # Server keys (§11): each server's newest key document as verified (the keyring's
    # cache), the notaries the user trusts, and the server keys they corroborated.
    """
    CREATE TABLE key_documents (
        server TEXT PRIMARY KEY,
        document TEXT NOT NULL,
        fetched_ts INTEGER NOT NULL
    );
    CREATE TABLE notaries (
        name TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        key_id TEXT NOT NULL,
        pubkey BLOB NOT NULL,
        added_ts INTEGER NOT NULL
    );
    CREATE TABLE corroborated (
        server TEXT NOT NULL,
        pubkey BLOB NOT NULL,
        notaries INTEGER NOT NULL,
        checked_ts INTEGER NOT NULL,
        PRIMARY KEY (server, pubkey)
    );
    """,
    # When each chain was last brought up to the server's head (what an offline
    # lookup is as old as), and the user's settings (the default server).
    """
    ALTER TABLE chains ADD COLUMN synced_ts INTEGER;
    UPDATE chains SET synced_ts = (SELECT max(received_ts) FROM first_seen
                                   WHERE first_seen.server = chains.server);
    CREATE TABLE settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # The log (§8): the last checkpoint verified of each server (every new one must
    # extend it), the Merkle tree of each verified chain as its complete subtrees'
    # roots (``merkle.CompactTree``: a root check costs only the new entries), and
    # the checkpoint notes that are evidence against a server.
    """
    CREATE TABLE checkpoints (
        server TEXT PRIMARY KEY,
        tree_size INTEGER NOT NULL,
        note TEXT NOT NULL,
        verified_ts INTEGER NOT NULL
    );
    CREATE TABLE merkle_trees (
        server TEXT PRIMARY KEY,
        tree_size INTEGER NOT NULL,
        hashes BLOB NOT NULL
    );
    ALTER TABLE evidence ADD COLUMN notes TEXT NOT NULL DEFAULT '[]';
    """,
    # Witnesses (§8.1): those the user trusts for each server (verifier keys as
    # typed, checked), and per server the quorum, the largest checkpoint verified
    # with a quorum of cosignatures (the log is trusted up to its tree size only),
    # and when the user was told that no witness guards the server.
    """
    CREATE TABLE witnesses (
        server TEXT NOT NULL,
        name TEXT NOT NULL,
        vkey TEXT NOT NULL,
        added_ts INTEGER NOT NULL,
        PRIMARY KEY (server, name)
    );
    CREATE TABLE witnessing (
        server TEXT PRIMARY KEY,
        quorum INTEGER NOT NULL DEFAULT 0 CHECK (quorum >= 0),
        tree_size INTEGER,
        note TEXT,
        verified_ts INTEGER,
        told_ts INTEGER
    );
    """,
]


def migrate(db: sqlite3.Connection) -> None:
    """Bring the state database to the newest schema, one step per transaction."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise ClientError(f"the home's state database has schema {version}, newer than "
                          f"this keyclient's {len(MIGRATIONS)}: update keyclient")
    for step in range(version, len(MIGRATIONS)):
        try:
            db.executescript(f"BEGIN IMMEDIATE; {MIGRATIONS[step]};"
                             f" PRAGMA user_version = {step + 1}; COMMIT;")
        except BaseException:
            if db.in_transaction:
                db.rollback()
            raise


def open_state(path: str) -> sqlite3.Connection:
    """The client's state database (mode 0600), migrated to the newest schema."""
    if not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite3.connect(path)
    migrate(db)
    return db


def default_home() -> str:
    import platformdirs   # only when no --home is given

    return platformdirs.user_data_dir("keyclient")


class Home:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self.db = open_state(os.path.join(self.path, "state.sqlite"))

    # --- servers --------------------------------------------------------------------

    def remember_server(self, name: str, url: str, now_ms: int, move: bool = False) -> None:
        """Remember the keyserver ``name`` at ``url``.

        A server already known at another URL keeps it unless ``move``: anyone can
        sign capabilities with a server's name, and silently following them would
        point every later command at an impostor."""
        with self.db:
            known = self.db.execute("SELECT url FROM servers WHERE name = ?", (name,)).fetchone()
            if known and known[0] != url and not move:
                raise ClientError(f"{name} is already known at {known[0]}; if it has moved to"
                                  f" {url}, add it again with --move")
            self.db.execute(
                "INSERT INTO servers (name, url, added_ts) VALUES (?, ?, ?) ON CONFLICT (name)"
                " DO UPDATE SET url = excluded.url", (name, url, now_ms))

    def servers(self) -> list[tuple[str, str]]:
        return list(self.db.execute("SELECT name, url FROM servers ORDER BY name"))

    def forget_server(self, name: str) -> None:
        """Forget the keyserver ``name`` and its downloaded chain (and the default,
        if it was). The replies and evidence it signed and the alerts about the
        user's identities stay: added again, its new chain is checked against them."""
        with self.db:
            for table, column in (("servers", "name"), ("chains", "server"),
                                  ("found", "server"), ("scanned", "server"),
                                  ("first_seen", "server"), ("merkle_trees", "server")):
                self.db.execute(f"DELETE FROM {table} WHERE {column} = ?", (name,))
            self.db.execute("DELETE FROM settings WHERE name = 'default_server' AND value = ?",
                            (name,))
        shutil.rmtree(os.path.join(self.path, "chains", name), ignore_errors=True)

    @property
    def default_server(self) -> str | None:
        """The server commands use when several are known and none is named."""
        row = self.db.execute("SELECT value FROM settings WHERE name = 'default_server'"
                              ).fetchone()
        return row[0] if row else None

    @default_server.setter
    def default_server(self, name: str) -> None:
        with self.db:
            self.db.execute("INSERT INTO settings (name, value) VALUES ('default_server', ?)"
                            " ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name,))

    def chain(self, name: str) -> LocalChain:
        if not is_domain(name):
            raise ClientError(f"{name!r} is not a server name")
        return LocalChain(self.db, os.path.join(self.path, "chains", name), name)

    # --- the user's own identities ------------------------------------------------

    def own_replies(self, server: str) -> list[tuple[str, int, UIDMessageReply]]:
        """``(identity, pos, reply)`` of every reply we hold for our identities on
        ``server``, by position."""
        return [(identity, pos, parse_uid_message_reply(json.loads(reply)))
                for identity, pos, reply in self.db.execute(
                    "SELECT identity, pos, reply FROM own_replies WHERE server = ?"
                    " ORDER BY pos", (server,))]

    def record_replies(self, server: str, identity: str,
                       replies: Iterable[tuple[int, int, UIDMessageReply]], *,
                       replace: bool = False) -> None:
        """Keep ``(pos, msgcount, reply)`` of verified replies for our ``identity``
        (what the server sent, so that its signature still verifies); a position
        already held keeps its reply unless ``replace``. The replies are the session's
        to hold (``ServerSession.hold``), which checks their order first."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self.db:
            self.db.executemany(
                f"{verb} INTO own_replies (server, identity, pos, msgcount, reply)"
                " VALUES (?, ?, ?, ?, ?)",
                [(server, identity, pos, msgcount, json.dumps(reply.raw))
                 for pos, msgcount, reply in replies])

    def monitored(self, server: str) -> dict[str, set[int]]:
        """Each of our identities on ``server`` (those we hold replies for), with
        the positions needing no new alert: its entries we wrote or learnt as ours,
        and those already alerted."""
        known: dict[str, set[int]] = {}
        for identity, pos in self.db.execute(
                "SELECT identity, pos FROM own_replies WHERE server = ?"
                " UNION SELECT identity, pos FROM alerts WHERE server = ?", (server, server)):
            known.setdefault(identity, set()).add(pos)
        return known

    def record_alerts(self, alerts: Iterable[Alert], now_ms: int) -> None:
        """Keep new alerts (one already kept stays as it is, acknowledged or not)."""
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO alerts (server, identity, pos, kind, fingerprint,"
                " found_ts) VALUES (?, ?, ?, ?, ?, ?)",
                [(alert.server, alert.identity, alert.pos, alert.kind, alert.fingerprint,
                  now_ms) for alert in alerts])

    def alerts(self, server: str | None = None, *,
               acknowledged: bool | None = None) -> list[Alert]:
        """The alerts of ``server`` (of every server if None), only the unacknowledged
        or acknowledged ones if ``acknowledged`` says so, by server and position."""
        return [Alert(*row) for row in self.db.execute(
            "SELECT server, identity, pos, kind, fingerprint, acknowledged_ts FROM alerts"
            " WHERE (? IS NULL OR server = ?) AND"
            " (? IS NULL OR (acknowledged_ts IS NOT NULL) = ?) ORDER BY server, pos",
            (server, server, acknowledged, acknowledged))]

    def acknowledge_alert(self, identity: str, pos: int, now_ms: int,
                          server: str | None = None) -> list[Alert]:
        """Acknowledge the unacknowledged alert of ``identity`` at ``pos`` (on
        ``server``, or on whichever server has one); return what was acknowledged."""
        with self.db:
            rows = list(self.db.execute(
                "UPDATE alerts SET acknowledged_ts = ? WHERE identity = ? AND pos = ? AND"
                " (? IS NULL OR server = ?) AND acknowledged_ts IS NULL RETURNING server,"
                " identity, pos, kind, fingerprint, acknowledged_ts",
                (now_ms, identity, pos, server, server)))
        return [Alert(*row) for row in rows]

    def hold_replies(self, server: str, replies: Iterable[UIDMessageReply]) -> None:
        """Keep verified replies of ``server`` (as sent), for the ordering rule, in one
        transaction; a bundle they complete is cached from then on."""
        rows = [(server, reply.entry.hashchain_pos, reply.entry.ts, json.dumps(reply.raw))
                for reply in replies]
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO held_replies (server, pos, ts, reply)"
                " VALUES (?, ?, ?, ?)", rows)
            self.db.executemany(
                "INSERT OR IGNORE INTO complete_bundles (server, bundle) SELECT ?, ? WHERE"
                " (SELECT COUNT(DISTINCT pos) FROM held_replies WHERE server = ? AND"
                " pos >= ? AND pos < ?) = ?",
                [(server, bundle, server, bundle * BUNDLE_SIZE, (bundle + 1) * BUNDLE_SIZE,
                  BUNDLE_SIZE) for bundle in {pos // BUNDLE_SIZE for _, pos, _, _ in rows}])

    def complete_bundles(self, server: str) -> set[int]:
        """The bundles (§5.1) of ``server`` with a held reply for every one of their
        positions: a cache that never needs fetching again (the head's partial
        bundle is not among them until its last position is held)."""
        return {bundle for bundle, in self.db.execute(
            "SELECT bundle FROM complete_bundles WHERE server = ?", (server,))}

    def held_at(self, server: str, positions: Iterable[int]) -> dict[int, UIDMessageReply]:
        """A held reply of ``server`` for each of ``positions`` that has one (the
        earliest, should the server have signed two times for one position)."""
        held = {}
        for pos in positions:
            row = self.db.execute("SELECT reply FROM held_replies WHERE server = ? AND pos = ?"
                                  " ORDER BY ts LIMIT 1", (server, pos)).fetchone()
            if row is not None:
                held[pos] = parse_uid_message_reply(json.loads(row[0]))
        return held

    def held_around(self, server: str, first: int, last: int, *,
                    known: Collection[tuple[int, int]] = ()) -> list[UIDMessageReply]:
        """The held replies that decide whether replies of positions ``first..last``
        are in order with them (§7.3 "ordered"): those inside the range, the latest of
        the nearest position before it and the earliest of the nearest one after it.
        The held replies are in order (each batch was checked before it was held), so
        nothing further away can contradict: three lookups in the primary key's order,
        not a scan of everything held. Those whose ``(pos, ts)`` is ``known`` (the
        caller has them in hand) are left out: they would only repeat what is known."""
        queries = (("pos >= ? AND pos <= ?", (first, last)),
                   ("pos < ? ORDER BY pos DESC, ts DESC LIMIT 1", (first,)),
                   ("pos > ? ORDER BY pos, ts LIMIT 1", (last,)))
        return [parse_uid_message_reply(json.loads(reply))
                for where, args in queries
                for pos, ts, reply in self.db.execute(
                    f"SELECT pos, ts, reply FROM held_replies WHERE server = ? AND {where}",
                    (server, *args))
                if (pos, ts) not in known]

    def record_evidence(self, server: str, what: str, replies: Iterable[UIDMessageReply],
                        now_ms: int, notes: Iterable[str] = ()) -> None:
        """Keep what proves that ``server`` cheated, as it signed it (replies, or
        checkpoint ``notes``); the same kept before (a later command caught the same
        lie) is not kept twice."""
        kept = json.dumps([reply.raw for reply in replies], sort_keys=True)
        kept_notes = json.dumps(list(notes))
        with self.db:
            self.db.execute(
                "INSERT INTO evidence (server, recorded_ts, what, replies, notes)"
                " SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM evidence WHERE"
                " server = ? AND replies = ? AND notes = ?)",
                (server, now_ms, what, kept, kept_notes, server, kept, kept_notes))

    def evidence(self, server: str) -> list[tuple[int, str, list[dict], list[str]]]:
        """``(recorded_ts, what, replies, notes)`` of every piece of evidence against
        ``server``, oldest first (a piece may hold signed replies, checkpoint notes or
        both: an entry dated after a witness's cosignature, §7.3)."""
        return [(ts, what, json.loads(replies), json.loads(notes))
                for ts, what, replies, notes in self.db.execute(
                    "SELECT recorded_ts, what, replies, notes FROM evidence WHERE server = ?"
                    " ORDER BY id", (server,))]

    # --- the log (§8) -----------------------------------------------------------------

    def checkpoint(self, server: str) -> str | None:
        """The note of the last checkpoint of ``server`` verified here (None if none)."""
        row = self.db.execute("SELECT note FROM checkpoints WHERE server = ?",
                              (server,)).fetchone()
        return row[0] if row else None

    def record_checkpoint(self, server: str, tree_size: int, note: str, now_ms: int) -> None:
        """Remember ``note`` (verified, and consistent with the one remembered) as the
        last checkpoint of ``server``."""
        with self.db:
            self.db.execute(
                "INSERT INTO checkpoints (server, tree_size, note, verified_ts) VALUES"
                " (?, ?, ?, ?) ON CONFLICT (server) DO UPDATE SET tree_size ="
                " excluded.tree_size, note = excluded.note, verified_ts = excluded.verified_ts",
                (server, tree_size, note, now_ms))

    def merkle_tree(self, server: str) -> tuple[int, list[bytes]]:
        """``(tree_size, hashes)`` of the compact Merkle tree kept of ``server``'s
        verified chain (``(0, [])`` if none)."""
        row = self.db.execute("SELECT tree_size, hashes FROM merkle_trees WHERE server = ?",
                              (server,)).fetchone()
        if row is None:
            return 0, []
        return row[0], [row[1][i:i + 32] for i in range(0, len(row[1]), 32)]

    def record_merkle_tree(self, server: str, tree_size: int, hashes: Iterable[bytes]) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO merkle_trees (server, tree_size, hashes) VALUES (?, ?, ?)"
                " ON CONFLICT (server) DO UPDATE SET tree_size = excluded.tree_size,"
                " hashes = excluded.hashes", (server, tree_size, b"".join(hashes)))

    # --- witnesses (§8.1) ---------------------------------------------------------------
    # Changing a server's witnesses or quorum forgets what the old ones cosigned (the
    # next sync finds the witnessed size anew) and that the user was told of none.

    def witnesses(self, server: str) -> list[VerifierKey]:
        """The witnesses trusted for ``server``, by name."""
        return [parse_verifier_key(vkey, alg=ALG_COSIGNATURE) for vkey, in self.db.execute(
            "SELECT vkey FROM witnesses WHERE server = ? ORDER BY name", (server,))]

    def quorum(self, server: str) -> int:
        """How many of its witnesses must have cosigned a tree of ``server`` for the
        client to trust it (0: none is required)."""
        row = self.db.execute("SELECT quorum FROM witnessing WHERE server = ?",
                              (server,)).fetchone()
        return row[0] if row else 0

    def add_witness(self, server: str, key: VerifierKey, quorum: int | None,
                    now_ms: int) -> int:
        """Trust the witness ``key`` for ``server`` with ``quorum`` (None: the quorum
        as it was, 1 if it was 0); return the quorum. A name or key already trusted
        for the server, or a quorum above the number of witnesses, changes nothing."""
        with self.db:
            known = self.db.execute("SELECT name, vkey FROM witnesses WHERE server = ?",
                                    (server,)).fetchall()
            for name, vkey in known:
                if name == key.name:
                    raise ClientError(f"witness {name} is already trusted for {server}:"
                                      " remove it first to change its key")
                if parse_verifier_key(vkey, alg=ALG_COSIGNATURE).pubkey == key.pubkey:
                    raise ClientError(f"this key is already trusted for {server} as witness "
                                      f"{name}: one witness counts once toward the quorum")
            self.db.execute("INSERT INTO witnesses (server, name, vkey, added_ts) VALUES"
                            " (?, ?, ?, ?)", (server, key.name, format_verifier_key(key), now_ms))
            if quorum is None:
                quorum = self.quorum(server) or 1
            self._set_quorum(server, quorum, len(known) + 1)
        return quorum

    def remove_witness(self, server: str, name: str) -> None:
        """Stop trusting witness ``name`` for ``server``; refused while the quorum
        needs more witnesses than would remain."""
        with self.db:
            if not self.db.execute("DELETE FROM witnesses WHERE server = ? AND name = ?",
                                   (server, name)).rowcount:
                raise ClientError(f"no witness {name} for {server}: see 'keyclient witness"
                                  f" list --server {server}'")
            left = self._witness_count(server)
            quorum = self.quorum(server)
            if quorum > left:
                raise ClientError(
                    f"the quorum of {server} is {quorum}: without {name}, {left} witness(es)"
                    f" would be left. Lower it first: 'keyclient witness quorum {left}"
                    f" --server {server}'")
            self._set_quorum(server, quorum, left)

    def set_quorum(self, server: str, quorum: int) -> None:
        """Require ``quorum`` of the witnesses of ``server`` (at most as many as there are)."""
        with self.db:
            self._set_quorum(server, quorum, self._witness_count(server))

    def _witness_count(self, server: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM witnesses WHERE server = ?",
                               (server,)).fetchone()[0]

    def _set_quorum(self, server: str, quorum: int, count: int) -> None:
        """Inside the caller's transaction: the quorum, what the witnesses cosigned
        forgotten."""
        if not 0 <= quorum <= count:
            raise ClientError(f"a quorum of {quorum} is impossible with {count} witness(es)"
                              f" for {server}: it must be 0 to {count}")
        self.db.execute(
            "INSERT INTO witnessing (server, quorum) VALUES (?, ?) ON CONFLICT (server) DO"
            " UPDATE SET quorum = excluded.quorum, tree_size = NULL, note = NULL,"
            " verified_ts = NULL, told_ts = NULL", (server, quorum))

    def witnessed(self, server: str) -> str | None:
        """The note of the largest checkpoint of ``server`` verified here with a quorum
        of its witnesses' cosignatures (None if none yet)."""
        row = self.db.execute("SELECT note FROM witnessing WHERE server = ?",
                              (server,)).fetchone()
        return row[0] if row else None

    def record_witnessed(self, server: str, tree_size: int, note: str, now_ms: int) -> None:
        """Remember ``note`` (verified, cosigned by a quorum) unless a larger one is."""
        with self.db:
            self.db.execute(
                "UPDATE witnessing SET tree_size = ?, note = ?, verified_ts = ? WHERE"
                " server = ? AND (tree_size IS NULL OR tree_size < ?)",
                (tree_size, note, now_ms, server, tree_size))

    def tell_unwitnessed(self, server: str, now_ms: int) -> bool:
        """Whether the user is yet to be told that no witness guards ``server`` (once:
        it is remembered as told now)."""
        with self.db:
            return self.db.execute(
                "INSERT INTO witnessing (server, told_ts) VALUES (?, ?) ON CONFLICT (server)"
                " DO UPDATE SET told_ts = excluded.told_ts WHERE told_ts IS NULL",
                (server, now_ms)).rowcount > 0

    def reserve_msgcounts(self, server: str, sigkeyhash: bytes, count: int,
                          now_ms: int) -> int:
        """The first of ``count`` KeyInit msgcounts for a batch under ``sigkeyhash``:
        the larger of the last one used here plus one and ``now_ms`` (§9: they grow
        forever, also across machines and lost state). Recorded before the batch is
        sent, so a failed batch never has its msgcounts reused."""
        with self.db:
            row = self.db.execute("SELECT msgcount FROM keyinit_msgcounts WHERE server = ? AND "
                                  "sigkeyhash = ?", (server, sigkeyhash)).fetchone()
            first = max(now_ms, row[0] + 1 if row else 0)
            self.db.execute(
                "INSERT INTO keyinit_msgcounts (server, sigkeyhash, msgcount) VALUES (?, ?, ?)"
                " ON CONFLICT (server, sigkeyhash) DO UPDATE SET msgcount = excluded.msgcount",
                (server, sigkeyhash, first + count - 1))
        return first

    # --- the identities the user looks up -------------------------------------------

    def shown(self, server: str, identity: str) -> Shown | None:
        """The message of ``identity`` on ``server`` that the user was last shown."""
        row = self.db.execute("SELECT pos, fingerprint FROM shown_keys WHERE server = ? AND"
                              " identity = ?", (server, identity)).fetchone()
        return Shown(*row) if row else None

    def record_shown(self, server: str, identity: str, shown: Shown, now_ms: int) -> None:
        """Remember ``shown`` as the message of ``identity`` last shown."""
        with self.db:
            self.db.execute(
                "INSERT INTO shown_keys (server, identity, pos, fingerprint, shown_ts)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (server, identity) DO UPDATE SET"
                " pos = excluded.pos, fingerprint = excluded.fingerprint,"
                " shown_ts = excluded.shown_ts",
                (server, identity, shown.pos, shown.fingerprint, now_ms))

    # --- server keys (§11) ------------------------------------------------------------

    def key_document(self, server: str) -> tuple[KeyDocument, int] | None:
        """The newest key document of ``server`` kept, and when it was fetched."""
        row = self.db.execute("SELECT document, fetched_ts FROM key_documents WHERE server = ?",
                              (server,)).fetchone()
        return (parse_key_document(json.loads(row[0]), server), row[1]) if row else None

    def record_key_document(self, server: str, document: KeyDocument, fetched_ts: int) -> None:
        """Keep ``document`` unless the one kept is newer (a later ``valid_until_ts``)."""
        with self.db:
            self.db.execute(
                "INSERT INTO key_documents (server, document, fetched_ts) VALUES (?, ?, ?)"
                " ON CONFLICT (server) DO UPDATE SET document = excluded.document,"
                " fetched_ts = excluded.fetched_ts"
                " WHERE json_extract(key_documents.document, '$.valid_until_ts')"
                " <= json_extract(excluded.document, '$.valid_until_ts')",
                (server, json.dumps(document.raw), fetched_ts))

    def notaries(self) -> list[Notary]:
        return [Notary(*row) for row in self.db.execute(
            "SELECT name, url, key_id, pubkey FROM notaries ORDER BY name")]

    def add_notary(self, notary: Notary, now_ms: int) -> None:
        """Trust ``notary`` (replacing one of the same name)."""
        with self.db:
            self.db.execute(
                "INSERT INTO notaries (name, url, key_id, pubkey, added_ts) VALUES"
                " (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET url = excluded.url,"
                " key_id = excluded.key_id, pubkey = excluded.pubkey",
                (notary.server_name, notary.url, notary.key_id, notary.pubkey, now_ms))

    def remove_notary(self, name: str) -> bool:
        with self.db:
            return self.db.execute("DELETE FROM notaries WHERE name = ?", (name,)).rowcount > 0

    def corroborated(self, server: str, pubkey: bytes) -> int | None:
        """By how many notaries ``server``'s key ``pubkey`` was corroborated (0: none
        was configured, and the user was told), or None if never checked."""
        row = self.db.execute("SELECT notaries FROM corroborated WHERE server = ? AND"
                              " pubkey = ?", (server, pubkey)).fetchone()
        return row[0] if row else None

    def record_corroborated(self, server: str, pubkeys: Iterable[bytes], notaries: int,
                            now_ms: int) -> None:
        with self.db:
            self.db.executemany(
                "INSERT INTO corroborated (server, pubkey, notaries, checked_ts) VALUES"
                " (?, ?, ?, ?) ON CONFLICT (server, pubkey) DO UPDATE SET"
                " notaries = excluded.notaries, checked_ts = excluded.checked_ts",
                [(server, pubkey, notaries, now_ms) for pubkey in pubkeys])

    # --- wallet ---------------------------------------------------------------------

    @contextlib.contextmanager
    def wallet(self) -> Iterator[Wallet]:
        # Tokens need RSA (cryptography, slow to import): only commands that pay load it.
        from .wallet import Wallet

        wallet = Wallet(os.path.join(self.path, "wallet.sqlite"))
        try:
            yield wallet
        finally:
            wallet.close()

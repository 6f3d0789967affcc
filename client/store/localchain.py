"""The client's verified copy of one keyserver's hashchain (§7.5), at rest.

Entries live in an append-only file (``entries.bin``, 153 bytes each); the
verified length and last hash are kept in the home's state database and only
advance (``commit``) after the entries are on disk (fsync), so a crash leaves at
most unverified bytes past the recorded length, which opening truncates. A file of
a million entries is 153 MB; reading it whole and scanning it in one loop is what
makes an exhaustive search (``store.search``) take about a second. Downloading and
verifying is the session's (``session.sync_chain``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Callable, Iterator, Mapping

from ..protocol.hashchain import ENTRY_SIZE, ZERO_HASH
from ..protocol.errors import VerificationError
from ..trust.chainstate import ChainState, check_expected


class LocalChain:
    """One server's verified chain: files under ``directory``, length in ``db``."""

    def __init__(self, db: sqlite3.Connection, directory: str, server: str):
        self.db, self.server, self.directory = db, server, directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.entries_path = os.path.join(directory, "entries.bin")
        row = db.execute("SELECT length, last_hash FROM chains WHERE server = ?",
                         (server,)).fetchone()
        self.length, self.last_hash = row if row else (0, ZERO_HASH)
        self.discard()   # unverified leftovers of a crash

    def state(self) -> ChainState:
        return ChainState(self.length, self.last_hash)

    @contextlib.contextmanager
    def appending(self) -> Iterator[Callable[[bytes], object]]:
        """A writer of entries after the recorded ones, on disk (fsync) when the block
        ends; they count only once ``commit`` records them, and ``discard`` drops them."""
        with open(self.entries_path, "ab") as handle:
            try:
                yield handle.write
            finally:
                handle.flush()
                os.fsync(handle.fileno())

    def discard(self) -> None:
        """Drop every byte past the recorded length."""
        with open(self.entries_path, "ab") as handle:
            if handle.tell() > self.length * ENTRY_SIZE:
                handle.truncate(self.length * ENTRY_SIZE)

    def commit(self, state: ChainState, received_ts: int, *, synced: bool = True) -> None:
        """Record ``state`` as verified: the entries up to it are on disk, and the new
        ones were received at ``received_ts`` (this client's clock) or later; if
        ``synced``, the chain reached the server's head then (``synced_ts``)."""
        with self.db:
            self.db.execute(
                "INSERT INTO chains (server, length, last_hash, synced_ts) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (server) DO UPDATE SET length = excluded.length,"
                " last_hash = excluded.last_hash,"
                " synced_ts = coalesce(excluded.synced_ts, synced_ts)",
                (self.server, state.length, state.last_hash, received_ts if synced else None))
            if state.length > self.length:
                self.db.execute(
                    "INSERT OR IGNORE INTO first_seen (server, end_pos, received_ts)"
                    " VALUES (?, ?, ?)", (self.server, state.length, received_ts))
        self.length, self.last_hash = state.length, state.last_hash

    def keep_verified(self, state: ChainState, received_ts: int,
                      expect: Mapping[int, bytes]) -> None:
        """After an interrupted download: record the verified entries on disk up to
        ``state`` (unless one differs from an ``expect``ed entry, a reply we hold:
        then nothing), drop the rest. The next sync goes on from there and checks
        the server's head as usual."""
        try:
            check_expected(expect, self.length, state.length, self.read_entry)
        except VerificationError:
            pass
        else:
            if state.length > self.length:
                self.commit(state, received_ts, synced=False)
        self.discard()

    @property
    def synced_ts(self) -> int | None:
        """When a sync last brought this chain up to the server's head (None if never)."""
        row = self.db.execute("SELECT synced_ts FROM chains WHERE server = ?",
                              (self.server,)).fetchone()
        return row[0] if row else None

    def first_seen(self, pos: int) -> int | None:
        """When this client first received an entry at or after ``pos`` (§7.3 ``F``):
        the time of the first sync that reached past it; None if none did."""
        row = self.db.execute("SELECT min(received_ts) FROM first_seen WHERE server = ?"
                              " AND end_pos > ?", (self.server, pos)).fetchone()
        return row[0]

    def read_entry(self, pos: int) -> bytes:
        """The entry at ``pos`` on disk, recorded or not (a download checks the
        entries it appended before it commits them)."""
        with open(self.entries_path, "rb") as handle:
            handle.seek(pos * ENTRY_SIZE)
            return handle.read(ENTRY_SIZE)

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        """The verified entries from position ``start`` on (to ``end``, exclusive, if
        given), as one block."""
        end = self.length if end is None else min(end, self.length)
        with open(self.entries_path, "rb") as handle:
            handle.seek(start * ENTRY_SIZE)
            return handle.read(max(end - start, 0) * ENTRY_SIZE)

    def entry(self, pos: int) -> bytes:
        """The verified entry at ``pos``."""
        if not 0 <= pos < self.length:
            raise IndexError(f"position {pos} is not on the verified chain")
        return self.read_entry(pos)

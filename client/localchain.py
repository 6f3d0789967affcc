"""The client's verified copy of one keyserver's hashchain (§7.3, §7.5).

Entries live in an append-only file (``entries.bin``, 153 bytes each) and the
identity-independent search keys k1 in a second one (``k1.bin``, 32 bytes each,
filled lazily by the first search). The verified length and last hash are kept
in the client's SQLite state, and only advance after the entries are on disk
(fsync), so a crash leaves at most unverified bytes past the recorded length,
which opening truncates. A file of a million entries is 153 MB; reading it whole
and scanning it in one loop is what makes an exhaustive search take about a
second.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from typing import Callable, Iterable, Mapping

import sqlite_utils

from .api import KeyserverAPI, download_chain
from .chainstate import ChainState
from .encoding import b64decode
from .errors import ChainError, VerificationError
from .hashchain import ENTRY_SIZE, ZERO_HASH, open_entry

K1_SIZE = 32

# CPython's own SHA-2 objects cost half as much per call as OpenSSL's through
# hashlib, and the exhaustive search makes a million tiny calls.
try:
    from _sha256 import sha256 as _sha256  # CPython 3.11
    from _sha512 import sha512 as _sha512
except ImportError:  # pragma: no cover - other Python versions
    try:
        from _sha2 import sha256 as _sha256, sha512 as _sha512  # CPython 3.12+
    except ImportError:
        _sha256, _sha512 = hashlib.sha256, hashlib.sha512

SCHEMA = """
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
"""


def open_state(path: str) -> sqlite_utils.Database:
    """The client's state database (mode 0600), with the chain tables."""
    if not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite_utils.Database(path)
    db.conn.executescript(SCHEMA)
    return db


class LocalChain:
    """One server's verified chain: files under ``directory``, length in ``db``."""

    def __init__(self, db: sqlite_utils.Database, directory: str, server: str):
        self.db, self.server = db, server
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.entries_path = os.path.join(directory, "entries.bin")
        self.k1_path = os.path.join(directory, "k1.bin")
        row = db.conn.execute("SELECT length, last_hash FROM chains WHERE server = ?",
                              (server,)).fetchone()
        self.length, self.last_hash = row if row else (0, ZERO_HASH)
        for path, size in ((self.entries_path, ENTRY_SIZE), (self.k1_path, K1_SIZE)):
            with open(path, "ab") as handle:
                if handle.tell() > self.length * size:
                    handle.truncate(self.length * size)  # unverified leftovers of a crash

    def state(self) -> ChainState:
        return ChainState(self.length, self.last_hash)

    def _commit(self, state: ChainState) -> None:
        with self.db.conn:
            self.db.conn.execute(
                "INSERT INTO chains (server, length, last_hash) VALUES (?, ?, ?)"
                " ON CONFLICT (server) DO UPDATE SET length = excluded.length,"
                " last_hash = excluded.last_hash", (self.server, state.length, state.last_hash))
        self.length, self.last_hash = state.length, state.last_hash

    def sync(self, api: KeyserverAPI, *, chunk_size: int = 10000,
             progress: Callable[[int], None] = lambda n: None,
             expect: Mapping[int, bytes] | None = None) -> int:
        """Download and verify everything after the local head; return how many new
        entries. Nothing of a sync that fails is kept (§7.5: a chain that does not
        verify is rejected whole): not a bad chunk, not the good chunks before it,
        not a chain whose entry at a position in ``expect`` (replies we hold) differs,
        nor one that the server's current head contradicts."""
        state = self.state()
        start = self.length
        try:
            with open(self.entries_path, "ab") as handle:
                for entries in download_chain(api, state, chunk_size=chunk_size):
                    handle.write(b"".join(entries))
                    progress(len(entries))
                handle.flush()
                os.fsync(handle.fileno())
            for pos, entry in sorted((expect or {}).items()):
                if start <= pos < state.length and self._read_entry(pos) != entry:
                    raise VerificationError(
                        f"the chain holds another entry at position {pos} than the server's "
                        "signed reply for it: the server rewrote history", position=pos)
            self._check_head(api.fetch_head(), state.length)
        except BaseException:
            with open(self.entries_path, "ab") as handle:
                handle.truncate(start * ENTRY_SIZE)
            raise
        self._commit(state)
        return self.length - start

    def _check_head(self, head: dict, length: int) -> None:
        """A head the chain already covers must be the entry it holds there (else the
        server forked the chain without making it longer)."""
        try:
            pos, entry = head["pos"], b64decode(head["entry"], "head entry",
                                                error=VerificationError)
        except (KeyError, TypeError):
            raise VerificationError("the server's head is malformed") from None
        if type(pos) is not int or pos < 0:
            raise VerificationError("the server's head is malformed")
        if pos < length and self._read_entry(pos) != entry:
            raise ChainError(f"the server's head at position {pos} is not the entry the "
                             "verified chain holds there: a fork", position=pos)

    def _read_entry(self, pos: int) -> bytes:
        with open(self.entries_path, "rb") as handle:
            handle.seek(pos * ENTRY_SIZE)
            return handle.read(ENTRY_SIZE)

    def read(self) -> bytes:
        with open(self.entries_path, "rb") as handle:
            return handle.read(self.length * ENTRY_SIZE)

    def entry(self, pos: int) -> bytes:
        """The verified entry at ``pos``."""
        if not 0 <= pos < self.length:
            raise IndexError(f"position {pos} is not on the verified chain")
        return self._read_entry(pos)

    def search(self, identity: str) -> list[tuple[int, bytes]]:
        """Every ``(position, UIDHash)`` of ``identity`` (§7.3)."""
        return self.search_many([identity])[identity]

    def search_many(self, identities: Iterable[str]) -> dict[str, list[tuple[int, bytes]]]:
        """Every ``(position, UIDHash)`` of each identity (§7.3), in one pass that
        scans each only in the entries it was not yet searched in; k1 values missing
        from the cache are computed on the way and kept. Large scans use every core."""
        identities = list(dict.fromkeys(identities))
        scans = [(identity, self._scanned(identity)) for identity in identities]
        scans = [(identity, upto) for identity, upto in scans if upto < self.length]
        if scans:
            self._run_scans(scans)
        found: dict[str, list[tuple[int, bytes]]] = {identity: [] for identity in identities}
        for identity in identities:
            found[identity] = [(pos, uid_hash) for pos, uid_hash in self.db.conn.execute(
                "SELECT pos, uid_hash FROM found WHERE server = ? AND identity = ? ORDER BY pos",
                (self.server, identity))]
        return found

    def _scanned(self, identity: str) -> int:
        row = self.db.conn.execute(
            "SELECT upto FROM scanned WHERE server = ? AND identity = ?",
            (self.server, identity)).fetchone()
        return row[0] if row else 0

    def _run_scans(self, scans: list[tuple[str, int]]) -> None:
        global _WORK
        with open(self.k1_path, "rb") as handle:
            cached = handle.read(self.length * K1_SIZE)
        # The k1 file must stay aligned: computing (and caching) starts at the first
        # entry some identity needs, never past the end of the cache.
        start = min([len(cached) // K1_SIZE] + [upto for _, upto in scans])
        _WORK = (self.read(), cached, scans)
        try:
            parts = _split(start, self.length)
            if len(parts) > 1:
                with multiprocessing.get_context("fork").Pool(len(parts)) as pool:
                    results = pool.map(_search_part, parts)
            else:
                results = [_search_part(parts[0])]
        finally:
            _WORK = ()
        fresh = b"".join(k1 for k1, _ in results)[len(cached) - start * K1_SIZE:]
        with open(self.k1_path, "ab") as handle:
            handle.write(fresh)
        matches = [match for _, found in results for match in found]
        with self.db.conn:
            self.db.conn.executemany(
                "INSERT OR IGNORE INTO found (server, identity, pos, uid_hash)"
                " VALUES (?, ?, ?, ?)", [(self.server, *match) for match in matches])
            self.db.conn.executemany(
                "INSERT INTO scanned (server, identity, upto) VALUES (?, ?, ?)"
                " ON CONFLICT (server, identity) DO UPDATE SET upto = excluded.upto",
                [(self.server, identity, self.length) for identity, _ in scans])


#: (entries, cached k1 values, [(identity, scanned upto)]) of the search in
#: progress: set before the worker processes fork, so they share it instead of
#: receiving copies.
_WORK: tuple = ()
#: Scans shorter than this are not worth starting processes for.
PARALLEL_MIN = 200_000


def _split(start: int, end: int) -> list[tuple[int, int]]:
    workers = os.cpu_count() or 1
    if end - start < PARALLEL_MIN or workers < 2:
        return [(start, end)]
    step = -(-(end - start) // workers)
    return [(low, min(low + step, end)) for low in range(start, end, step)]


def _search_part(bounds: tuple[int, int]) -> tuple[bytes, list[tuple[str, int, bytes]]]:
    """k1 of entries ``start..end-1`` (from the cache or computed) and the matches
    ``(identity, position, UIDHash)`` of every identity not yet scanned there."""
    data, cached, scans = _WORK
    start, end = bounds
    have = min(end, len(cached) // K1_SIZE)
    sha512 = _sha512
    k1s = cached[start * K1_SIZE:have * K1_SIZE] + b"".join(
        [sha512(data[i:i + 8]).digest()[:32]
         for i in range(max(start, have) * ENTRY_SIZE + 33, end * ENTRY_SIZE + 33, ENTRY_SIZE)])
    found = []
    for identity, upto in scans:
        low = max(start, upto)
        found.extend((identity, pos, uid_hash) for pos, uid_hash in
                     _scan(data, k1s[(low - start) * K1_SIZE:], identity, low, end))
    return k1s, found


def _scan(data: bytes, k1s: bytes, identity: str, start: int,
          end: int) -> Iterable[tuple[int, bytes]]:
    """The exhaustive search: SHA256(k1 || identity) for every entry (``k1s`` holds
    those of ``start..end-1``), compared with the entries' HashIDs all at once (XOR
    of the two concatenations as integers, then a search for an aligned run of 32
    zero bytes), so the Python loop does nothing but hash. Only a match is opened."""
    if start >= end:
        return
    target = identity.encode("utf-8")
    sha256 = _sha256
    computed = b"".join([sha256(k1s[i:i + K1_SIZE] + target).digest()
                         for i in range(0, (end - start) * K1_SIZE, K1_SIZE)])
    stored = b"".join([data[i:i + 32] for i in range(start * ENTRY_SIZE + 41,
                                                     end * ENTRY_SIZE + 41, ENTRY_SIZE)])
    diff = (int.from_bytes(computed, "little") ^ int.from_bytes(stored, "little")).to_bytes(
        len(computed), "little")
    zero = bytes(32)
    index = diff.find(zero)
    while index != -1:
        if index % 32:
            index = diff.find(zero, (index // 32 + 1) * 32)  # straddles two entries
            continue
        pos = start + index // 32
        uid_hash = open_entry(data[pos * ENTRY_SIZE:(pos + 1) * ENTRY_SIZE], identity)
        if uid_hash is not None:
            yield pos, uid_hash
        index = diff.find(zero, index + 32)

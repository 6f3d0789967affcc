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

import os
import sqlite3
from typing import Callable, Iterable, Mapping, Sequence


from .api import KeyserverAPI, download_chain
from .chainstate import ChainState
from .protocol.errors import ChainError, VerificationError
from .protocol.hashchain import ENTRY_SIZE, K1_SIZE, ZERO_HASH, fast_sha256, k1_values, open_entry
from .protocol.wire import Head


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


def open_state(path: str) -> sqlite3.Connection:
    """The client's state database (mode 0600), with the chain tables."""
    if not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    return db


class LocalChain:
    """One server's verified chain: files under ``directory``, length in ``db``."""

    def __init__(self, db: sqlite3.Connection, directory: str, server: str):
        self.db, self.server = db, server
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.entries_path = os.path.join(directory, "entries.bin")
        self.k1_path = os.path.join(directory, "k1.bin")
        row = db.execute("SELECT length, last_hash FROM chains WHERE server = ?",
                              (server,)).fetchone()
        self.length, self.last_hash = row if row else (0, ZERO_HASH)
        for path, size in ((self.entries_path, ENTRY_SIZE), (self.k1_path, K1_SIZE)):
            with open(path, "ab") as handle:
                if handle.tell() > self.length * size:
                    handle.truncate(self.length * size)  # unverified leftovers of a crash

    def state(self) -> ChainState:
        return ChainState(self.length, self.last_hash)

    def _commit(self, state: ChainState) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO chains (server, length, last_hash) VALUES (?, ?, ?)"
                " ON CONFLICT (server) DO UPDATE SET length = excluded.length,"
                " last_hash = excluded.last_hash", (self.server, state.length, state.last_hash))
        self.length, self.last_hash = state.length, state.last_hash

    def sync(self, api: KeyserverAPI, *, chunk_size: int = 10000,
             progress: Callable[[int], None] = lambda n: None,
             expect: Mapping[int, bytes] | None = None, index: Sequence[str] = ()) -> int:
        """Download and verify everything after the local head; return how many new
        entries. Nothing of a sync that fails is kept (§7.5: a chain that does not
        verify is rejected whole): not a bad chunk, not the good chunks before it,
        not a chain whose entry at a position in ``expect`` (replies we hold) differs,
        nor one that the server's current head contradicts.

        The identities in ``index`` are searched in the new entries on the way when
        the download is long: a second process computes k1 and scans each chunk
        while this one verifies the next (a later ``search`` then has nothing left)."""
        state = self.state()
        start = self.length
        indexer = None
        try:
            with open(self.entries_path, "ab") as handle:
                for entries in download_chain(api, state, chunk_size=chunk_size):
                    block = b"".join(entries)
                    handle.write(block)
                    if indexer is None and index and len(entries) == chunk_size:
                        indexer = self._indexer(start, index)
                    if indexer is not None:
                        indexer.add(block, state.length - len(entries))
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
            if indexer is not None:
                indexer.close()
            raise
        self._commit(state)
        if indexer is not None:
            fresh, matches = indexer.results()
            self._record_scans(start, fresh, matches, indexer.identities)
        return self.length - start

    def _indexer(self, start: int, identities: Sequence[str]) -> _Indexer | None:
        """An indexer for entries from ``start``, if the k1 cache and every identity's
        scan end exactly there (else the gap is for ``search`` to fill)."""
        if os.path.getsize(self.k1_path) != start * K1_SIZE or any(
                self._scanned(identity) != start for identity in identities):
            return None
        return _Indexer(list(identities))

    def _check_head(self, head: Head, length: int) -> None:
        """A head the chain already covers must be the entry it holds there (else the
        server forked the chain without making it longer)."""
        if head.pos < length and self._read_entry(head.pos) != head.entry:
            raise ChainError(f"the server's head at position {head.pos} is not the entry the "
                             "verified chain holds there: a fork", position=head.pos)

    def _read_entry(self, pos: int) -> bytes:
        with open(self.entries_path, "rb") as handle:
            handle.seek(pos * ENTRY_SIZE)
            return handle.read(ENTRY_SIZE)

    def read(self, start: int = 0) -> bytes:
        """The verified entries from position ``start`` on, as one block."""
        with open(self.entries_path, "rb") as handle:
            handle.seek(start * ENTRY_SIZE)
            return handle.read((self.length - start) * ENTRY_SIZE)

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
            found[identity] = [(pos, uid_hash) for pos, uid_hash in self.db.execute(
                "SELECT pos, uid_hash FROM found WHERE server = ? AND identity = ? ORDER BY pos",
                (self.server, identity))]
        return found

    def _scanned(self, identity: str) -> int:
        row = self.db.execute(
            "SELECT upto FROM scanned WHERE server = ? AND identity = ?",
            (self.server, identity)).fetchone()
        return row[0] if row else 0

    def _run_scans(self, scans: list[tuple[str, int]]) -> None:
        global _WORK
        with open(self.k1_path, "rb") as handle:
            cached_count = min(os.fstat(handle.fileno()).st_size // K1_SIZE, self.length)
            # Only what the scans need is read: an identity searched before costs the
            # new entries, not the whole chain. The k1 file stays aligned: computing
            # (and caching) starts at the first entry some identity needs, never past
            # the end of the cache.
            start = min([cached_count] + [upto for _, upto in scans])
            handle.seek(start * K1_SIZE)
            cached = handle.read((cached_count - start) * K1_SIZE)
        _WORK = (start, self.read(start), cached, scans)
        try:
            parts = _split(start, self.length)
            if len(parts) > 1:
                import multiprocessing   # only for large scans: it is slow to import

                with multiprocessing.get_context("fork").Pool(len(parts)) as pool:
                    results = pool.map(_search_part, parts)
            else:
                results = [_search_part(parts[0])]
        finally:
            _WORK = ()
        self._record_scans(cached_count, b"".join(k1 for k1, _ in results),
                           [match for _, found in results for match in found],
                           [identity for identity, _ in scans])

    def _record_scans(self, k1_from: int, fresh: bytes, matches: list[tuple[str, int, bytes]],
                      identities: Sequence[str]) -> None:
        """Keep new k1 values (from position ``k1_from``) and the matches; the
        ``identities`` are now scanned up to the chain's length."""
        with open(self.k1_path, "ab") as handle:
            handle.truncate(k1_from * K1_SIZE)   # a torn write of a crash
            handle.write(fresh)
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO found (server, identity, pos, uid_hash)"
                " VALUES (?, ?, ?, ?)", [(self.server, *match) for match in matches])
            self.db.executemany(
                "INSERT INTO scanned (server, identity, upto) VALUES (?, ?, ?)"
                " ON CONFLICT (server, identity) DO UPDATE SET upto = excluded.upto",
                [(self.server, identity, self.length) for identity in identities])


class _Indexer:
    """k1 and the scan of some identities, chunk by chunk, in a second process."""

    def __init__(self, identities: list[str]):
        import multiprocessing   # only for long downloads: it is slow to import

        self.identities = identities
        self.pool = multiprocessing.get_context("fork").Pool(1)
        self.pending: list = []

    def add(self, block: bytes, first: int) -> None:
        self.pending.append(self.pool.apply_async(_index_block,
                                                  (block, first, self.identities)))

    def results(self) -> tuple[bytes, list[tuple[str, int, bytes]]]:
        try:
            parts = [pending.get() for pending in self.pending]
        finally:
            self.close()
        return b"".join(k1 for k1, _ in parts), [match for _, found in parts for match in found]

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


def _index_block(block: bytes, first: int,
                 identities: list[str]) -> tuple[bytes, list[tuple[str, int, bytes]]]:
    k1s = k1_values(block)
    return k1s, [(identity, pos, uid_hash) for identity in identities
                 for pos, uid_hash in _scan(block, k1s, identity, first)]


#: (first position, entries from it, cached k1 values from it, [(identity, scanned
#: upto)]) of the search in progress: set before the worker processes fork, so they
#: share it instead of receiving copies.
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
    """The k1 values of entries ``start..end-1`` that the cache lacked (computed
    here) and the matches ``(identity, position, UIDHash)`` of every identity not yet
    scanned there."""
    base, data, cached, scans = _WORK
    start, end = bounds
    have = max(start, min(end, base + len(cached) // K1_SIZE))
    fresh = k1_values(data[(have - base) * ENTRY_SIZE:(end - base) * ENTRY_SIZE])
    k1s = cached[(start - base) * K1_SIZE:(have - base) * K1_SIZE] + fresh
    found = []
    for identity, upto in scans:
        low = max(start, upto)
        block = data[(low - base) * ENTRY_SIZE:(end - base) * ENTRY_SIZE]
        found.extend((identity, pos, uid_hash) for pos, uid_hash in
                     _scan(block, k1s[(low - start) * K1_SIZE:], identity, low))
    return fresh, found


def _scan(block: bytes, k1s: bytes, identity: str, first: int) -> Iterable[tuple[int, bytes]]:
    """The exhaustive search over the entries in ``block`` (positions from ``first``;
    ``k1s`` holds their k1): SHA256(k1 || identity) for every entry, compared with the
    entries' HashIDs all at once (XOR of the two concatenations as integers, then a
    search for an aligned run of 32 zero bytes), so the Python loop does nothing but
    hash. Only a match is opened."""
    count = len(block) // ENTRY_SIZE
    if not count:
        return
    target = identity.encode("utf-8")
    sha256 = fast_sha256
    computed = b"".join([sha256(k1s[i:i + K1_SIZE] + target).digest()
                         for i in range(0, count * K1_SIZE, K1_SIZE)])
    stored = b"".join([block[i:i + 32] for i in range(41, count * ENTRY_SIZE, ENTRY_SIZE)])
    diff = (int.from_bytes(computed, "little") ^ int.from_bytes(stored, "little")).to_bytes(
        len(computed), "little")
    zero = bytes(32)
    index = diff.find(zero)
    while index != -1:
        if index % 32:
            index = diff.find(zero, (index // 32 + 1) * 32)  # straddles two entries
            continue
        n = index // 32
        uid_hash = open_entry(block[n * ENTRY_SIZE:(n + 1) * ENTRY_SIZE], identity)
        if uid_hash is not None:
            yield first + n, uid_hash
        index = diff.find(zero, index + 32)

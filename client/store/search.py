"""The exhaustive identity search over a local chain (§7.3), with its caches.

The identity-independent search keys k1 live in a second file beside the
entries (``k1.bin``, 32 bytes each, filled lazily by the first search), and each
identity's matches and how far it was scanned in the home's state database, so
a later search only scans the entries that arrived since.
"""

from __future__ import annotations

import os
import threading
from typing import Iterable, Sequence

from ..interrupts import signals_blocked, worker_init
from ..protocol.hashchain import ENTRY_SIZE, K1_SIZE, fast_sha256, k1_values, open_entry
from .localchain import LocalChain


class ChainSearch:
    """Searches of one verified ``chain``; the k1 cache is cut back to its length."""

    def __init__(self, chain: LocalChain):
        self.chain = chain
        self.k1_path = os.path.join(chain.directory, "k1.bin")
        with open(self.k1_path, "ab") as handle:
            if handle.tell() > chain.length * K1_SIZE:
                handle.truncate(chain.length * K1_SIZE)  # unverified leftovers of a crash

    def indexer(self, start: int, identities: Sequence[str]) -> _Indexer | None:
        """An indexer for entries from ``start``, if the k1 cache and every identity's
        scan end exactly there (else the gap is for ``search`` to fill)."""
        if os.path.getsize(self.k1_path) != start * K1_SIZE or any(
                self._scanned(identity) != start for identity in identities):
            return None
        return _Indexer(list(identities))

    def search(self, identity: str) -> list[tuple[int, bytes]]:
        """Every ``(position, UIDHash)`` of ``identity`` (§7.3)."""
        return self.search_many([identity])[identity]

    def search_many(self, identities: Iterable[str]) -> dict[str, list[tuple[int, bytes]]]:
        """Every ``(position, UIDHash)`` of each identity (§7.3), in one pass that
        scans each only in the entries it was not yet searched in; k1 values missing
        from the cache are computed on the way and kept. Large scans use every core."""
        identities = list(dict.fromkeys(identities))
        scans = [(identity, self._scanned(identity)) for identity in identities]
        scans = [(identity, upto) for identity, upto in scans if upto < self.chain.length]
        if scans:
            self._run_scans(scans)
        found: dict[str, list[tuple[int, bytes]]] = {identity: [] for identity in identities}
        for identity in identities:
            found[identity] = [(pos, uid_hash) for pos, uid_hash in self.chain.db.execute(
                "SELECT pos, uid_hash FROM found WHERE server = ? AND identity = ? ORDER BY pos",
                (self.chain.server, identity))]
        return found

    def _scanned(self, identity: str) -> int:
        row = self.chain.db.execute(
            "SELECT upto FROM scanned WHERE server = ? AND identity = ?",
            (self.chain.server, identity)).fetchone()
        return row[0] if row else 0

    def _run_scans(self, scans: list[tuple[str, int]]) -> None:
        global _WORK
        with open(self.k1_path, "rb") as handle:
            cached_count = min(os.fstat(handle.fileno()).st_size // K1_SIZE, self.chain.length)
            # Only what the scans need is read: an identity searched before costs the
            # new entries, not the whole chain. The k1 file stays aligned: computing
            # (and caching) starts at the first entry some identity needs, never past
            # the end of the cache.
            start = min([cached_count] + [upto for _, upto in scans])
            handle.seek(start * K1_SIZE)
            cached = handle.read((cached_count - start) * K1_SIZE)
        _WORK = (start, self.chain.read(start), cached, scans)
        try:
            parts = _split(start, self.chain.length)
            if len(parts) > 1:
                import multiprocessing   # only for large scans: it is slow to import

                with signals_blocked():
                    pool = multiprocessing.get_context("fork").Pool(len(parts),
                                                                    initializer=worker_init)
                try:
                    results = pool.map(_search_part, parts)
                finally:
                    _stop(pool)
                    # Dropped here, not by an interrupt's traceback at exit, when
                    # Pool.__del__ would fail noisily on a closed pipe.
                    del pool
            else:
                results = [_search_part(parts[0])]
        finally:
            _WORK = ()
        self.record_scans(cached_count, b"".join(k1 for k1, _ in results),
                           [match for _, found in results for match in found],
                           [identity for identity, _ in scans])

    def record_scans(self, k1_from: int, fresh: bytes, matches: list[tuple[str, int, bytes]],
                      identities: Sequence[str]) -> None:
        """Keep new k1 values (from position ``k1_from``) and the matches; the
        ``identities`` are now scanned up to the chain's length."""
        with open(self.k1_path, "ab") as handle:
            handle.truncate(k1_from * K1_SIZE)   # a torn write of a crash
            handle.write(fresh)
        with self.chain.db:
            self.chain.db.executemany(
                "INSERT OR IGNORE INTO found (server, identity, pos, uid_hash)"
                " VALUES (?, ?, ?, ?)", [(self.chain.server, *match) for match in matches])
            self.chain.db.executemany(
                "INSERT INTO scanned (server, identity, upto) VALUES (?, ?, ?)"
                " ON CONFLICT (server, identity) DO UPDATE SET upto = excluded.upto",
                [(self.chain.server, identity, self.chain.length) for identity in identities])


class _Indexer:
    """k1 and the scan of some identities, chunk by chunk, in a second process."""

    def __init__(self, identities: list[str]):
        import multiprocessing   # only for long downloads: it is slow to import

        self.identities = identities
        with signals_blocked():
            self.pool = multiprocessing.get_context("fork").Pool(1, initializer=worker_init)
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
        pool, self.pool = self.pool, None
        if pool is not None:
            _stop(pool)


#: Seconds a pool's workers get to end on SIGTERM before they are killed.
STOP_GRACE_S = 5.0


def _stop(pool) -> None:
    """End a pool's processes, wait for them, and free them. A worker forked while
    another thread of the command held a lock can hang before ``worker_init`` lets
    SIGTERM in: what is left after ``STOP_GRACE_S``, or when an interrupt cuts the
    wait short, is killed (SIGKILL cannot be blocked), so no worker outlives the
    command holding its output open. Freeing the processes runs their finalizers,
    which close their pipes; it is done with the signals held back, since a handler
    raising ``Interrupted`` inside a finalizer prints a traceback ("Exception ignored
    in") instead of stopping the command (a signal that arrives meanwhile is
    delivered after)."""
    import multiprocessing

    def kill_left() -> None:
        for child in multiprocessing.active_children():
            child.kill()

    timer = threading.Timer(STOP_GRACE_S, kill_left)
    timer.daemon = True
    timer.start()
    try:
        pool.terminate()
        pool.join()
    finally:
        timer.cancel()
        kill_left()
    with signals_blocked():
        pool._pool.clear()   # the pool's only references to its processes


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

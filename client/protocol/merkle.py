"""The RFC 9162 Merkle tree over the hashchain's entries (§8), as pure functions in
paired names: ``prove_inclusion``/``check_inclusion`` and
``prove_consistency``/``check_consistency``, plus ``tree_root``.

Provers read stored node hashes through a one-method ``HashReader``, as Go's
``tlog`` does: ``node(level, index)`` is the root of the complete subtree of leaves
``index * 2**level .. (index + 1) * 2**level - 1`` (level 0: the leaf hashes). A
store that keeps those (hash tiles keep exactly them) answers every proof in
O(log n) reads, and never rebuilds the tree.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from .encoding import sha256
from .errors import VerificationError

HASH_SIZE = 32


class HashReader(Protocol):
    def node(self, level: int, index: int) -> bytes:
        """The hash of the complete subtree at ``level`` and ``index``."""


def leaf_hash(entry: bytes) -> bytes:
    return sha256(b"\x00" + entry)


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1): RFC 9162's ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree(reader: HashReader, start: int, end: int) -> bytes:
    """MTH(D[start:end]); every subtree the recursion meets is aligned on its left."""
    n = end - start
    if n & (n - 1) == 0 and start % n == 0:
        return reader.node(n.bit_length() - 1, start // n)
    k = _split(n)
    return node_hash(_subtree(reader, start, start + k), _subtree(reader, start + k, end))


def tree_root(size: int, reader: HashReader) -> bytes:
    """The root of the tree of the first ``size`` leaves (SHA256 of nothing when empty)."""
    return sha256(b"") if size == 0 else _subtree(reader, 0, size)


def prove_inclusion(index: int, size: int, reader: HashReader) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")

    def path(m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return path(m, start, start + k) + [_subtree(reader, start + k, end)]
        return path(m - k, start + k, end) + [_subtree(reader, start, start + k)]

    return path(index, 0, size)


def check_inclusion(leaf: bytes, index: int, size: int, root: bytes,
                    proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.3.2: raise ``VerificationError`` unless ``proof`` shows that the
    leaf hash ``leaf`` is leaf ``index`` of the tree of ``size`` with ``root``."""
    if not 0 <= index < size:
        raise VerificationError(f"leaf {index} is not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise VerificationError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("the inclusion proof is too short")
    if r != root:
        raise VerificationError(f"leaf {index} is not in the tree of size {size} with "
                                "this root")


def prove_consistency(first: int, second: int, reader: HashReader) -> list[bytes]:
    """PROOF(first, D[0:second]) of RFC 9162 §2.1.4.1; empty when ``first`` is 0 or
    equals ``second`` (§8's edge cases)."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from {first} to {second}")
    if first in (0, second):
        return []

    def subproof(m: int, start: int, end: int, whole: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if whole else [_subtree(reader, start, end)]
        k = _split(n)
        if m <= k:
            return subproof(m, start, start + k, whole) + [_subtree(reader, start + k, end)]
        return subproof(m - k, start + k, end, False) + [_subtree(reader, start, start + k)]

    return subproof(first, 0, second, True)


def check_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                      proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: raise ``VerificationError`` unless ``proof`` shows that the
    tree of ``second`` leaves with ``second_root`` extends the one of ``first`` with
    ``first_root``. An empty proof is accepted exactly when ``first`` is 0, or
    equals ``second`` and the roots are equal (§8)."""
    if not 0 <= first <= second:
        raise VerificationError(f"no tree of size {second} extends one of size {first}")
    if first == 0 or first == second:
        if proof:
            raise VerificationError("a consistency proof from 0, or between equal sizes, "
                                    "is empty")
        if first == second and first_root != second_root:
            raise VerificationError(f"two different roots for the tree of size {first}")
        return
    if not proof:
        raise VerificationError("the consistency proof is empty")
    path = list(proof)
    if first & (first - 1) == 0:      # first is a power of two: its root starts the path
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("the consistency proof is too short")
    if fr != first_root or sr != second_root:
        raise VerificationError(f"the tree of size {second} does not extend the tree of "
                                f"size {first}: the log was rewritten")


class MemoryTree:
    """Every node hash of a list of leaves, kept in memory: a ``HashReader`` for tests
    and for clients that hold all the entries (they verify the chain whole anyway)."""

    def __init__(self, entries: Sequence[bytes] = ()):
        self.levels: list[list[bytes]] = [[]]
        for entry in entries:
            self.append(entry)

    def append(self, entry: bytes) -> None:
        """Add a leaf and every complete subtree it closes: O(log n) hashes."""
        self.levels[0].append(leaf_hash(entry))
        level = 0
        while len(self.levels[level]) % 2 == 0:
            if len(self.levels) == level + 1:
                self.levels.append([])
            pair = self.levels[level][-2:]
            self.levels[level + 1].append(node_hash(*pair))
            level += 1

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def node(self, level: int, index: int) -> bytes:
        return self.levels[level][index]


class CompactTree:
    """The tree of the first ``size`` leaves kept as the roots of its complete
    subtrees, largest first (one per bit of ``size``, as RFC 9162's ``MTH``
    splits it): O(log n) hashes that give the root and grow leaf by leaf. A client
    keeps one per chain, so the root of a longer tree costs only the new leaves."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()):
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a tree of size {size} has {bin(size).count('1')} subtree "
                             f"roots, not {len(hashes)}")
        self.size, self.hashes = size, list(hashes)

    def append(self, entry: bytes) -> None:
        h, size = leaf_hash(entry), self.size
        while size & 1:
            h = node_hash(self.hashes.pop(), h)
            size >>= 1
        self.hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self.hashes:
            return sha256(b"")
        root = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            root = node_hash(h, root)
        return root

"""Checkpoints and proofs (§8): the background worker signs a checkpoint of the
tree with the log key at most once per ``CHECKPOINT_INTERVAL`` when the chain grew;
the proofs are computed from the stored tree in O(log n) reads.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import nacl.signing

from client.protocol.checkpoint import Checkpoint, sign_checkpoint
from client.protocol.errors import BadRequest
from client.protocol.merkle import HashReader, prove_consistency, prove_inclusion, tree_root

from ..storage import checkpoints, published, tree
from ..storage.checkpoints import StoredCheckpoint
from ..storage.db import Database, transaction
from ..storage.tree import TreeReader
from . import own

T = TypeVar("T")


def origin(server_name: str) -> str:
    """The log's origin, which is also its key's name (§8)."""
    return f"{server_name}/keyserver"


def make(db: Database, log_key: nacl.signing.SigningKey, interval_ms: int,
         now: int) -> StoredCheckpoint | None:
    """Sign and store a checkpoint of the whole tree if it grew since the newest one
    and that one is at least ``interval_ms`` old; return it (None: nothing to do).
    The log key must be the one the chain binds (§4 ``log_vkey``)."""
    def due(newest: StoredCheckpoint | None, size: int) -> bool:
        return size > 0 and (newest is None or (size > newest.tree_size
                                                and now - newest.created_ts >= interval_ms))

    if not due(checkpoints.newest(db), tree.size(db)):
        return None
    with transaction(db):
        size = tree.size(db)
        if not due(checkpoints.newest(db), size):
            return None
        vkey = own.current(db).log_vkey
        if vkey.pubkey != bytes(log_key.verify_key):
            raise RuntimeError("the log key file does not hold the key the chain binds")
        note = sign_checkpoint(Checkpoint(vkey.name, size, tree_root(size, TreeReader(db))),
                               vkey, log_key)
        stored = StoredCheckpoint(size, note.text(), now)
        checkpoints.insert(db, stored)
    # Committed: from now on the checkpoint may be served. Note its size outside the
    # database, so that a restored older database cannot serve a shorter log.
    folder = published.database_folder(db.conn)
    if folder is not None:
        published.record(folder, size)
    return stored


class _Wanted:
    """A ``HashReader`` that notes which nodes a prover reads (the nodes a proof needs
    depend on the sizes and the index only, never on the hashes)."""

    def __init__(self):
        self.nodes: list[tuple[int, int]] = []

    def node(self, level: int, index: int) -> bytes:
        self.nodes.append((level, index))
        return bytes(32)


def _prove(db: Database, prove: Callable[[HashReader], T]) -> T:
    """Run ``prove`` over the stored tree with one query for all its nodes, not one
    for each (about 20 at a million entries)."""
    wanted = _Wanted()
    prove(wanted)
    reader = TreeReader(db)
    reader.load(wanted.nodes)
    return prove(reader)


def _size_in_range(name: str, value: int, maximum: int) -> None:
    if value > maximum:
        raise BadRequest(f"{name} {value} is beyond the tree's size {maximum}")


def inclusion_proof(db: Database, index: int, tree_size: int) -> list[bytes]:
    """§12 ``proof/inclusion``: leaf ``index`` in the tree of ``tree_size``."""
    _size_in_range("tree_size", tree_size, tree.size(db))
    if index >= tree_size:
        raise BadRequest(f"index {index} is not below tree_size {tree_size}")
    return _prove(db, lambda reader: prove_inclusion(index, tree_size, reader))


def consistency_proof(db: Database, first: int, second: int) -> list[bytes]:
    """§12 ``proof/consistency``: ``0 <= first <= second <= size`` (§8), else 400."""
    _size_in_range("second", second, tree.size(db))
    if first > second:
        raise BadRequest(f"first {first} is beyond second {second}")
    return _prove(db, lambda reader: prove_consistency(first, second, reader))

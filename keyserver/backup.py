"""Online backups of an instance, and restoring one into a new instance folder.

``backup`` copies the database with SQLite's online backup API, which copies pages
as of one read transaction (WAL: writers go on meanwhile), then every other file of
the instance folder (configuration, signing and log keys, token keys), and records
in ``backup.json`` what the copy holds: the chain length and the largest checkpoint
tree size. ``restore`` makes a new instance folder from a backup; the size recorded
in its ``published_size`` is the largest one known (the backup's, the target's
previous file, the operator's ``--published-size``), so a restored instance whose
chain is shorter than what the log published refuses to serve, unless the operator
accepts the shorter log (``accept_shorter``: the decision is recorded in
``published_shrinks`` and the instance's published size becomes its chain's length).

A witness must never go back on what it cosigned (§8.1), and a restored one remembers
only the backup's checkpoints, while its key may have cosigned larger trees since. So
a backup leaves the witness key out, and a restore forgets the witnessed checkpoints
and makes a new witness key: the restored witness starts afresh under a key that has
signed nothing, and the logs and clients that trusted the old one are told to take
the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
import urllib.parse
from dataclasses import dataclass

from . import defaults
from .storage import files, published

MANIFEST = "backup.json"


class BackupRefused(Exception):
    """A backup or restore that would overwrite something, or read no instance."""


@dataclass(frozen=True)
class Holds:
    chain_length: int
    checkpoint_size: int
    published_size: int | None
    #: The published size the operator gave up for this chain (``accept_shorter``).
    shrunk_from: int | None = None
    #: How many logs' witnessed checkpoints the restore forgot (a new witness key).
    witnessed_logs: int = 0


def _skipped(database: str) -> set[str]:
    """The database and its side files: the backup API copies the database itself."""
    return {database, f"{database}-wal", f"{database}-shm", f"{database}.lock",
            f"{database}-journal"}


def _holds(path: str) -> tuple[int, int]:
    """(chain length, largest checkpoint tree size) of the database at ``path``."""
    conn = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True)
    try:
        length = conn.execute("SELECT COALESCE(MAX(pos) + 1, 0) FROM chain").fetchone()[0]
        size = conn.execute("SELECT COALESCE(MAX(tree_size), 0) FROM checkpoints").fetchone()[0]
        return length, size
    finally:
        conn.close()


def backup(instance: str, dest: str, database: str = defaults.DATABASE,
           wait_s: float = 10.0, witness_key_file: str = defaults.WITNESS_KEY_FILE) -> Holds:
    """Copy the running instance in ``instance`` to the new folder ``dest``, all but
    the witness key (a restore makes a new one)."""
    source_db = os.path.join(instance, database)
    if not os.path.exists(source_db):
        raise BackupRefused(f"no keyserver instance in {instance}")
    # Read before the database is copied: at that moment the published size is at most
    # the chain's length, and the copy holds at least that chain.
    recorded = published.read(instance)
    try:
        os.mkdir(dest, 0o700)
    except FileExistsError:
        raise BackupRefused(f"{dest} already exists; a backup goes into a new folder") from None
    try:
        os.chmod(dest, 0o700)
        target_db = os.path.join(dest, database)
        fd = os.open(target_db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        source = sqlite3.connect(f"file:{urllib.parse.quote(source_db)}?mode=ro", uri=True,
                                 timeout=wait_s)
        target = sqlite3.connect(target_db)
        try:
            source.backup(target)   # pages=-1: all in one step, one consistent read
            target.execute("PRAGMA journal_mode=DELETE")   # one self-contained file
        finally:
            target.close()
            source.close()
        # The other files after the database: keys made meanwhile are copied too, so
        # every key the copied database names is there.
        skipped = _skipped(database) | {published.FILE, witness_key_file}
        for name in sorted(os.listdir(instance)):
            if name in skipped or name.endswith(".tmp"):
                continue
            src, dst = os.path.join(instance, name), os.path.join(dest, name)
            if os.path.isdir(src) and not os.path.islink(src):
                # A token key's ``.tmp`` is a key being made, not yet committed.
                shutil.copytree(src, dst, symlinks=True,
                                ignore=shutil.ignore_patterns("*.tmp"))
            elif os.path.isfile(src):
                shutil.copy2(src, dst)
        length, size = _holds(target_db)
        holds = Holds(length, size, recorded)
        with open(os.path.join(dest, MANIFEST), "w", encoding="utf-8") as handle:
            json.dump({"chain_length": length, "checkpoint_size": size,
                       "published_size": recorded, "database": database,
                       "witness_key_file": witness_key_file,
                       "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                      handle, indent=1)
            handle.write("\n")
        files.make_private(dest)
        for parent, _folders, names in os.walk(dest):
            for name in names:
                with open(os.path.join(parent, name), "rb") as handle:
                    os.fsync(handle.fileno())
            files.fsync_directory(parent)
        return holds
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def read_manifest(folder: str) -> dict:
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise BackupRefused(f"{folder} is not a keyserver backup (no {MANIFEST})") from None


def restore(backup_folder: str, instance: str, published_size: int | None = None,
            accept_shorter: bool = False) -> Holds:
    """Make a new instance in ``instance`` from ``backup_folder``; return what it holds,
    with the published size it now records (the largest known; with ``accept_shorter``,
    no more than the chain's length, the larger size given up in ``shrunk_from``).
    The witness starts afresh: a new key, no witnessed checkpoints."""
    from .instance import INSTANCE_FILES

    manifest = read_manifest(backup_folder)
    database = manifest.get("database", defaults.DATABASE)
    if not os.path.isfile(os.path.join(backup_folder, database)):
        raise BackupRefused(f"{backup_folder} holds no database ({database})")
    existing = [name for name in (*INSTANCE_FILES, database)
                if os.path.exists(os.path.join(instance, name))]
    if existing:
        raise BackupRefused(f"{instance} already holds an instance ({', '.join(existing)}); "
                            "restore into a new folder")
    length, size = _holds(os.path.join(backup_folder, database))
    previous = published.read(instance) if os.path.isdir(instance) else None
    known = [n for n in (manifest.get("published_size"), size, previous, published_size)
             if n is not None]
    recorded = max(known) if known else None
    shrunk_from = None
    if accept_shorter and recorded is not None and recorded > length:
        shrunk_from, recorded = recorded, length

    parent, name = os.path.split(os.path.abspath(instance))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.restore-", dir=parent)   # 0700
    try:
        for entry in sorted(os.listdir(backup_folder)):
            if entry == MANIFEST:
                continue
            src, dst = os.path.join(backup_folder, entry), os.path.join(staging, entry)
            if os.path.isdir(src) and not os.path.islink(src):
                shutil.copytree(src, dst, symlinks=True)
            elif os.path.isfile(src):
                shutil.copy2(src, dst)
        witnessed_logs = _new_witness(staging, database, manifest.get(
            "witness_key_file", defaults.WITNESS_KEY_FILE))
        if shrunk_from is not None:
            published.record_shrink(staging, shrunk_from, length, os.path.abspath(backup_folder))
        if recorded is not None:
            published.record(staging, recorded)
        files.make_private(staging)
        if os.path.isdir(instance):
            # A folder kept for its published_size (or a mount point): fill it.
            for entry in os.listdir(staging):
                os.replace(os.path.join(staging, entry), os.path.join(instance, entry))
            os.rmdir(staging)
            files.make_private(instance)
        else:
            os.rename(staging, instance)
        files.fsync_directory(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Holds(length, size, recorded, shrunk_from, witnessed_logs)


def _new_witness(folder: str, database: str, key_file: str) -> int:
    """Forget the witnessed checkpoints of the database in ``folder`` and make a new
    witness key there (a backup made before backups left it out may hold the old
    one); return how many logs were forgotten."""
    from .service.signing import witness_key

    conn = sqlite3.connect(os.path.join(folder, database))
    try:
        with conn:
            forgotten = conn.execute("DELETE FROM witnessed_logs").rowcount \
                if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                                " AND name = 'witnessed_logs'").fetchone() else 0
    finally:
        conn.close()
    path = os.path.join(folder, key_file)
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    witness_key(path)
    return forgotten

"""The log's tree on the server, checked from outside (§8, §12): every inclusion and
consistency proof of every tree up to 70 entries against roots computed here from the
entries; the tiles (C2SP tlog-tiles) of several tree sizes against hashes computed
here; ``keyserver tiles export`` against what the server serves; checkpoints against
a minimal signed-note verifier written here (not ``client.protocol.checkpoint``);
and ``keyserver chain verify`` against a damaged tree.

The entries are appended through the server's own storage (``chain.append``, which
writes the tree in the append's transaction), so the proofs and tiles come from the
real ``tree_nodes``."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import nacl.signing
import pytest

from client.protocol.errors import BadRequest, VerificationError
from client.protocol.merkle import check_consistency, check_inclusion
from client.protocol.tiles import (Tile, format_entry_bundle, format_hash_tile, format_tile_path,
                                   parse_entry_bundle, parse_hash_tile, parse_tile_path,
                                   tiles_for_size)
from keyserver.service import checkpoints as checkpoint_service
from keyserver.service.signing import key_file_path, read_log_key
from keyserver.storage import chain, db
from conftest import now_ms

ORIGIN = "example.org/keyserver"


# --- an independent Merkle tree and tiles (RFC 9162, C2SP tlog-tiles) -----------------

def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 over leaf hashes, by its recursive definition."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return sha(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def levels_of(entries: list[bytes]) -> list[list[bytes]]:
    """Every complete subtree's hash, level by level, pairing the level below."""
    levels = [[sha(b"\x00" + entry) for entry in entries]]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([sha(b"\x01" + below[i] + below[i + 1])
                       for i in range(0, len(below) - 1, 2)])
    return levels


def expected_tiles(entries: list[bytes]) -> dict[str, bytes]:
    """path -> contents of every tile of the tree of ``entries`` (fewer than 256,000
    items per level, so ``N`` is one 3-digit group)."""
    tiles = {}
    levels = levels_of(entries)
    rows = {"entries": [len(e).to_bytes(2, "big") + e for e in entries]}
    rows.update({str(level): levels[8 * level] for level in range(len(levels))
                 if 8 * level < len(levels) and levels[8 * level]})
    for name, items in rows.items():
        for n in range(0, len(items), 256):
            chunk = items[n:n + 256]
            suffix = "" if len(chunk) == 256 else f".p/{len(chunk)}"
            tiles[f"tile/{name}/{n // 256:03d}{suffix}"] = b"".join(chunk)
    return tiles


# --- an independent signed-note verifier (C2SP signed-note, §8) ----------------------

def verify_note(note: str, vkey: str) -> tuple[int, bytes]:
    """Check ``note`` against the verifier key string ``vkey`` by hand; return the
    checkpoint's size and root."""
    name, key_hash_hex, key_b64 = vkey.split("+", 2)
    key = base64.b64decode(key_b64, validate=True)
    assert key[0] == 0x01 and len(key) == 33
    key_hash = sha(name.encode() + b"\n" + key)[:4]
    assert key_hash.hex() == key_hash_hex
    body, separator, signatures = note.partition("\n\n")
    assert separator and body.count("\n") == 2
    lines = signatures.split("\n")
    assert lines[-1] == "" and len(lines) == 2
    dash, signer, blob = lines[0].split(" ")
    assert (dash, signer) == ("\u2014", name)
    signature = base64.b64decode(blob, validate=True)
    assert signature[:4] == key_hash and len(signature) == 68
    nacl.signing.VerifyKey(key[1:]).verify((body + "\n").encode(), signature[4:])
    origin, size, root = body.split("\n")
    assert origin == name == ORIGIN
    return int(size), base64.b64decode(root, validate=True)


# --- the server's tree, grown through its storage ------------------------------------

def grow(app, size: int) -> list[bytes]:
    """Append synthetic entries until the chain holds ``size``; return all entries."""
    with app.app_context():
        database = db.get_db()
        with db.transaction(database):
            head = chain.head(database)
            for pos in range(head.pos + 1, size):
                head = chain.append(database, f"tree-{pos}@example.org", os.urandom(32),
                                    now_ms(), head)
        return chain.read_entries(database, 0, size)


def sign_checkpoint(app, instance: Path) -> None:
    """What the worker does, without waiting for CHECKPOINT_INTERVAL."""
    log_key = read_log_key(key_file_path(str(instance), "log.key"))
    with app.app_context():
        assert checkpoint_service.make(db.get_db(), log_key, 0, now_ms()) is not None


@pytest.fixture
def log_vkey(client) -> str:
    return client.get("/v1/capabilities").json["log_vkey"]


def test_every_proof_of_every_tree_up_to_70(app, instance, client, log_vkey):
    entries = grow(app, 70)
    leaves = [sha(b"\x00" + entry) for entry in entries]
    roots = {size: mth(leaves[:size]) for size in range(1, 71)}
    roots[0] = sha(b"")
    sign_checkpoint(app, instance)
    assert verify_note(client.get("/checkpoint").get_data(as_text=True), log_vkey) \
        == (70, roots[70])
    with app.app_context():
        database = db.get_db()
        for size in range(1, 71):
            for index in range(size):
                proof = checkpoint_service.inclusion_proof(database, index, size)
                check_inclusion(leaves[index], index, size, roots[size], proof)
                for bad in tampered(proof):
                    with pytest.raises(VerificationError):
                        check_inclusion(leaves[index], index, size, roots[size], bad)
                with pytest.raises(VerificationError):
                    check_inclusion(leaves[index], index ^ 1, size, roots[size], proof)
            for first in range(size + 1):
                proof = checkpoint_service.consistency_proof(database, first, size)
                check_consistency(first, size, roots[first], roots[size], proof)
                for bad in tampered(proof):
                    with pytest.raises(VerificationError):
                        check_consistency(first, size, roots[first], roots[size], bad)
                if 0 < first < size:
                    with pytest.raises(VerificationError):
                        check_consistency(first, size, roots[first - 1], roots[size], proof)
    # The endpoints serve what the service proves (every index of the largest tree).
    for index in range(70):
        body = client.get(f"/v1/hashchain/proof/inclusion?index={index}&tree_size=70").json
        check_inclusion(leaves[index], index, 70, roots[70],
                        [base64.b64decode(h + "=" * (-len(h) % 4)) for h in body["hashes"]])


def tampered(proof: list[bytes]) -> list[list[bytes]]:
    """Each hash with one bit flipped, the proof one hash short and one hash long."""
    variants = [proof[:i] + [bytes([proof[i][0] ^ 1]) + proof[i][1:]] + proof[i + 1:]
                for i in range(len(proof))]
    if proof:
        variants.append(proof[:-1])
    return variants + [proof + [bytes(32)]]


def test_tiles_of_several_tree_sizes(app, instance, client, log_vkey):
    assert client.get("/checkpoint").status_code == 404
    assert client.get("/tile/0/000.p/1").status_code == 404      # before any checkpoint
    served_before: dict[str, bytes] = {}
    for size in (1, 3, 255, 256, 257, 600):
        entries = grow(app, size)
        sign_checkpoint(app, instance)
        note = client.get("/checkpoint")
        assert note.mimetype == "text/plain" and note.headers["Cache-Control"] == "no-cache"
        assert verify_note(note.get_data(as_text=True), log_vkey) \
            == (size, mth(levels_of(entries)[0]))
        expected = expected_tiles(entries)
        assert sorted(expected) == sorted(format_tile_path(t) for t in tiles_for_size(size))
        for path, data in expected.items():
            response = client.get("/" + path)
            assert response.status_code == 200, path
            assert response.data == data, path
            assert response.mimetype == "application/octet-stream"
            full = ".p/" not in path
            assert response.headers["Cache-Control"] == (
                "public, max-age=31536000, immutable" if full else "no-cache")
            tile = parse_tile_path(path)
            parse = parse_entry_bundle if tile.level is None else parse_hash_tile
            assert len(parse(response.data, tile)) == tile.width
        # What earlier checkpoints' readers fetched is still served, unchanged.
        for path, data in served_before.items():
            assert client.get("/" + path).data == data, path
        served_before.update(expected)
        for beyond in beyond_the_tree(size):
            response = client.get("/" + format_tile_path(beyond))
            assert (response.status_code, response.json["errcode"]) == (404, "NOT_FOUND")


def beyond_the_tree(size: int) -> list[Tile]:
    """Tiles a tree of ``size`` does not hold all of."""
    full, rest = divmod(size, 256)
    tiles = [Tile(0, full + 1), Tile(None, full + 1), Tile(0, full), Tile(5, 0, 1)]
    if rest < 255:
        tiles += [Tile(0, full, rest + 1), Tile(None, full, rest + 1)]
    if size < 512:
        tiles.append(Tile(1, 0, size // 256 + 1))
    return tiles


#: Off the tile grammar (one spelling per tile): 400; a well-formed tile the tree of 3
#: does not hold: 404.
PATHS = [
    ("/tile/0/5", 400), ("/tile/0/0005", 400), ("/tile/00/000", 400), ("/tile/-1/000", 400),
    ("/tile/64/000", 400), ("/tile/x/000", 400), ("/tile/0/x000/000", 400),
    ("/tile/0/x001", 400), ("/tile/0/001/002", 400), ("/tile/0/000.p/0", 400),
    ("/tile/0/000.p/256", 400), ("/tile/0/000.p/01", 400), ("/tile/0/000.p/", 400),
    ("/tile/0/000.p", 400), ("/tile/entries/000.p/1/2", 400), ("/tile/entries", 400),
    ("/tile/0/000/", 400), ("/tile/0/x999999999999999999999/000", 400),
    ("/tile/0/x01/000", 400), ("/tile/0/1001/000", 400),
    ("/tile/0/x001/000", 404), ("/tile/63/000.p/1", 404), ("/tile/entries/000", 404),
]


def test_malformed_tile_paths_are_refused(app, instance, client):
    grow(app, 3)
    sign_checkpoint(app, instance)
    for path, status in PATHS:
        response = client.get(path)
        assert response.status_code == status, path
        assert response.json["errcode"] == {400: "BAD_REQUEST", 404: "NOT_FOUND"}[status]


def test_tile_paths_round_trip():
    assert format_tile_path(Tile(0, 1234067)) == "tile/0/x001/x234/067"
    assert format_tile_path(Tile(None, 1000, 3)) == "tile/entries/x001/000.p/3"
    for tile in (Tile(0, 0), Tile(63, 2**63, 255), Tile(None, 999), Tile(2, 10**6, 1)):
        assert parse_tile_path(format_tile_path(tile)) == tile
        assert parse_tile_path("/" + format_tile_path(tile)) == tile
    with pytest.raises(BadRequest):
        parse_tile_path("tile/0/x018/x446/x744/x073/x709/x551/616")    # 2^64


def test_tile_contents_round_trip_and_cut_ones_are_refused():
    hashes = [bytes([i]) * 32 for i in range(3)]
    assert parse_hash_tile(format_hash_tile(hashes), Tile(0, 0, 3)) == hashes
    with pytest.raises(VerificationError, match=r"^tile/0/000\.p/3: 64 bytes, not 3 hashes$"):
        parse_hash_tile(format_hash_tile(hashes[:2]), Tile(0, 0, 3))
    # C2SP entry bundles: entries of any length (up to 65535), the empty one included.
    entries = [b"x", bytes(range(256)) * 2, b""]
    bundle = Tile(None, 1000, 3)
    data = format_entry_bundle(entries)
    assert parse_entry_bundle(data, bundle) == entries
    for cut, why in [(data + b"\x00", "cut inside a length"),
                     (data[:-3], "cut inside an entry"),
                     (format_entry_bundle(entries[:2]), "2 entries, not 3")]:
        with pytest.raises(VerificationError, match=rf"^tile/entries/x001/000\.p/3: {why}$"):
            parse_entry_bundle(cut, bundle)


def test_tiles_for_large_sizes_have_the_levels_and_partials_of_go_tlog():
    tiles = tiles_for_size(256 * 256 * 2 + 256 * 3 + 7)
    by_level = {level: [t for t in tiles if t.level == level] for level in (0, 1, 2, None)}
    assert len(by_level[0]) == 512 + 3 + 1 and by_level[0][-1] == Tile(0, 515, 7)
    assert by_level[1] == [Tile(1, 0), Tile(1, 1), Tile(1, 2, 3)]
    assert by_level[2] == [Tile(2, 0, 2)]
    assert len(by_level[None]) == 516 and {t.level for t in tiles} == {0, 1, 2, None}


def test_export_is_what_the_server_serves(app, instance, client, runner, tmp_path):
    folder = tmp_path / "public"
    result = runner.invoke(args=["tiles", "export", str(folder)])
    assert result.exit_code == 1 and "no checkpoint yet" in result.output
    files = {}
    for size in (257, 600):
        entries = grow(app, size)
        sign_checkpoint(app, instance)
        result = runner.invoke(args=["tiles", "export", str(folder)])
        assert result.exit_code == 0, result.output
        assert f"tree of size {size}" in result.output
        files = {path.relative_to(folder).as_posix(): path.read_bytes()
                 for path in folder.rglob("*") if path.is_file()}
        expected = expected_tiles(entries)
        assert set(expected) | {"checkpoint"} <= set(files)
        for path, data in files.items():
            response = client.get("/" + path)
            assert response.status_code == 200 and response.data == data, path
    # The partial tiles of size 257 stay, still what the server serves for them.
    assert files["tile/0/001.p/1"] == expected_tiles(entries)["tile/0/001"][:32]
    result = runner.invoke(args=["tiles", "export", str(folder)])
    assert "4 full tiles kept" in result.output        # tile/0/000, 001, entries/000, 001


# --- keyserver chain verify checks the tree -----------------------------------------

def tamper(app, sql, *args):
    with app.app_context():
        db.get_db().conn.execute(sql, args)


@pytest.mark.parametrize("sql, level, index, problem", [
    ("UPDATE tree_nodes SET hash = randomblob(32) WHERE level = 0 AND idx = 5", 0, 5,
     "not the hash"),
    ("UPDATE tree_nodes SET hash = randomblob(32) WHERE level = 3 AND idx = 1", 3, 1,
     "not the hash"),
    ("DELETE FROM tree_nodes WHERE level = 2 AND idx = 2", 2, 2, "missing"),
    ("DELETE FROM tree_nodes WHERE level = 0 AND idx = 20", 0, 20, "missing"),
    ("INSERT INTO tree_nodes VALUES (0, 21, randomblob(32))", 0, 21, "beyond"),
    ("INSERT INTO tree_nodes VALUES (4, 1, randomblob(32))", 4, 1, "beyond"),
])
def test_chain_verify_reports_the_first_bad_tree_node(app, runner, sql, level, index, problem):
    grow(app, 21)
    assert runner.invoke(args=["chain", "verify"]).output == \
        "chain OK: 21 entries; Merkle tree OK\n"
    tamper(app, sql)
    result = runner.invoke(args=["chain", "verify"])
    assert result.exit_code == 1
    assert f"Merkle tree broken: tree node at level {level}, index {index}: {problem}" \
        in result.output


@pytest.mark.parametrize("batch", [2, 4, 6, 64])
def test_the_tree_check_runs_in_batches(app, batch):
    from keyserver.storage import tree

    grow(app, 45)
    with app.app_context():
        tree.verify_stored(db.get_db(), 45, batch)
    tamper(app, "UPDATE tree_nodes SET hash = randomblob(32) WHERE level = 1 AND idx = 17")
    tamper(app, "UPDATE tree_nodes SET hash = randomblob(32) WHERE level = 2 AND idx = 3")
    with app.app_context(), pytest.raises(tree.BadNode) as caught:
        tree.verify_stored(db.get_db(), 45, batch)
    assert (caught.value.level, caught.value.index) == (1, 17)

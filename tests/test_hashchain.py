"""The 153-byte entry, link verification and identity search (§7.1, §7.3, §7.5)."""

import json

import pytest

from client.protocol.errors import ChainError
from client.protocol.encoding import sha256
from client.protocol.hashchain import (ENTRY_SIZE, ENTRY_TYPE, ZERO_HASH, derive_keys, format_entry, open_entry,
                              parse_entry, search_identity, verify_entries)
from conftest import VECTORS


def spec_entries(vectors):
    return vectors["hashchain"]["entries"]


def test_spec_vector_keys(vectors):
    first = spec_entries(vectors)[0]
    k1, k2 = derive_keys(bytes.fromhex(first["nonce"]))
    assert k1.hex() == first["k1"]
    assert k2.hex() == first["k2"]
    assert parse_entry(bytes.fromhex(first["entry"])).uid_index.hex() == first["uid_index"]


def test_parse_entry_gives_the_fields_of_a_spec_vector(vectors):
    """Each field of §7.1 at its offset, and H[n] = SHA256(body || H[n-1])."""
    case = spec_entries(vectors)[0]
    entry = parse_entry(bytes.fromhex(case["entry"]))
    assert entry.hash == sha256(entry.body + bytes.fromhex(case["prev_hash"]))
    assert (entry.type, entry.nonce.hex()) == (ENTRY_TYPE, case["nonce"])
    assert entry.hash_id == sha256(bytes.fromhex(case["k1"]) + case["identity"].encode())
    assert entry.uid_index.hex() == case["uid_index"]
    assert entry.hash + entry.body == bytes.fromhex(case["entry"])


@pytest.mark.parametrize("index", [0, 1])
def test_spec_vector_entries(vectors, index):
    case = spec_entries(vectors)[index]
    entry = format_entry(bytes.fromhex(case["prev_hash"]), bytes.fromhex(case["nonce"]),
                         case["identity"], bytes.fromhex(case["uid_hash"]))
    assert entry.hex() == case["entry"]


def committed_cases():
    return json.loads((VECTORS / "hashchain_entries.json").read_text())["entries"]


@pytest.mark.parametrize("case", committed_cases(), ids=lambda c: f"pos{c['position']}")
def test_committed_vectors(case):
    entry = format_entry(bytes.fromhex(case["prev_hash"]), bytes.fromhex(case["nonce"]),
                         case["identity"], bytes.fromhex(case["uid_hash"]))
    assert entry.hex() == case["entry"]


def chain():
    return [bytes.fromhex(case["entry"]) for case in committed_cases()]


def test_verify_whole_chain_returns_last_hash():
    entries = chain()
    assert verify_entries(entries, ZERO_HASH) == entries[-1][:32]
    assert verify_entries(entries[2:], entries[1][:32], 2) == entries[-1][:32]


def test_entry_layout():
    entry = parse_entry(chain()[1])
    assert len(chain()[1]) == ENTRY_SIZE == 153
    assert entry.type == 1 and entry.nonce == bytes(8)
    assert entry.body == chain()[1][32:]


def corrupt(entries, pos, how):
    entries = list(entries)
    if how == "short":
        entries[pos] = entries[pos][:-1]
    elif how == "long":
        entries[pos] = entries[pos] + b"\x00"
    elif how == "type":
        entries[pos] = entries[pos][:32] + b"\x02" + entries[pos][33:]
    elif how == "field":
        entries[pos] = entries[pos][:100] + bytes([entries[pos][100] ^ 1]) + entries[pos][101:]
    elif how == "hash":
        entries[pos] = bytes([entries[pos][0] ^ 1]) + entries[pos][1:]
    return entries


@pytest.mark.parametrize("how,reason", [("short", "bytes"), ("long", "bytes"), ("type", "type"),
                                        ("field", "link"), ("hash", "link")])
@pytest.mark.parametrize("pos", [0, 2, 3])
def test_malformed_entry_reported_at_its_position(how, reason, pos):
    with pytest.raises(ChainError, match=reason) as info:
        verify_entries(corrupt(chain(), pos, how), ZERO_HASH)
    assert info.value.position == pos


def test_wrong_predecessor_breaks_first_entry():
    with pytest.raises(ChainError) as info:
        verify_entries(chain()[2:], chain()[0][:32], 2)
    assert info.value.position == 2


def test_search_finds_every_entry_of_an_identity_in_order():
    cases = committed_cases()
    found = list(search_identity(chain(), "alice@example.org"))
    assert found == [(1, bytes.fromhex(cases[1]["uid_hash"])),
                     (3, bytes.fromhex(cases[3]["uid_hash"]))]
    assert list(search_identity(chain(), "carol@example.org")) == []


def test_search_uses_cached_k1():
    entries = chain()
    k1s = [derive_keys(entry[33:41])[0] for entry in entries]
    assert list(search_identity(entries, "bob.smith-2@mail.example.org", k1s=k1s)) == [
        (2, bytes.fromhex(committed_cases()[2]["uid_hash"]))]


def test_matching_hashid_with_broken_cruid_is_a_chain_error():
    entry = chain()[1]
    broken = entry[:80] + bytes([entry[80] ^ 1]) + entry[81:]
    with pytest.raises(ChainError, match="decrypt"):
        open_entry(broken, "alice@example.org")


def test_matching_entry_with_wrong_uid_index_is_a_chain_error():
    entry = chain()[1]
    broken = entry[:121] + bytes(32)
    with pytest.raises(ChainError, match="UIDIndex"):
        open_entry(broken, "alice@example.org")


def test_k1_values_of_a_block_are_each_entrys_k1():
    from client.protocol.hashchain import derive_keys, k1_values

    entries, prev = [], ZERO_HASH
    for n in range(5):
        entries.append(format_entry(prev, bytes([n]) * 8, "a@example.org", bytes(32)))
        prev = entries[-1][:32]
    assert k1_values(b"".join(entries)) == b"".join(derive_keys(bytes([n]) * 8)[0]
                                                    for n in range(5))
    assert k1_values(entries[2]) == derive_keys(bytes([2]) * 8)[0]
    assert k1_values(b"") == b""

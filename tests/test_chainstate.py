"""What the client trusts of a chain (``client.trust.chainstate``, §7.5), without
I/O: a chunk continues the verified prefix or is refused whole; a finished
download must agree with the replies we hold and with the server's head."""

import pytest

from client.protocol.errors import ChainError, VerificationError
from client.protocol.wire import Chunk, Head
from client.trust.chainstate import ChainState, check_expected, check_head
from conftest import make_chain

CHAIN = make_chain(6)


def test_chunks_advance_the_state():
    state = ChainState()
    assert state.accept(Chunk(0, 5, CHAIN[:4])) == CHAIN[:4]
    assert state.accept(Chunk(4, 5, CHAIN[4:])) == CHAIN[4:]
    assert (state.length, state.last_hash) == (6, CHAIN[5][:32])


@pytest.mark.parametrize("chunk, error", [
    (Chunk(3, 5, CHAIN[3:]), "chunk starts at 3, expected 2"),
    (Chunk(2, 0, CHAIN[2:]), "server head 0 is behind the verified chain of 2 entries"),
    (Chunk(2, 0, []), "server head 0 is behind the verified chain of 2 entries"),
    (Chunk(2, 3, CHAIN[2:]), "chunk claims head 3 before its own entries"),
    (Chunk(2, 4, CHAIN[2:]), "chunk claims head 4 before its own entries"),
    (Chunk(2, 5, [CHAIN[3], *CHAIN[3:]]), "entry 2: hash does not link to entry 1"),
], ids=["gap", "rollback", "rollback-of-one-entry", "head-before-entries",
        "head-one-before-the-last-entry", "bad-link"])
def test_a_chunk_that_does_not_continue_is_refused_whole(chunk, error):
    state = ChainState()
    state.accept(Chunk(0, 5, CHAIN[:2]))
    with pytest.raises(ChainError, match=error):
        state.accept(chunk)
    assert (state.length, state.last_hash) == (2, CHAIN[1][:32])


def test_a_head_at_the_last_verified_entry_is_no_rollback():
    """The boundary of the rollback rule: head = length - 1 is the chain we hold."""
    state = ChainState()
    state.accept(Chunk(0, 5, CHAIN[:2]))
    assert state.accept(Chunk(2, 1, [])) == []
    assert state.length == 2


def entry_at(pos):
    return CHAIN[pos]


def test_expected_entries_must_be_the_chains():
    check_expected({1: CHAIN[1], 9: b"beyond the download"}, 0, 6, entry_at)
    check_expected({0: b"before the download"}, 1, 6, entry_at)
    # The bounds: the first downloaded entry is compared, the first one after is not.
    check_expected({6: b"not yet downloaded"}, 1, 6, entry_at)
    with pytest.raises(VerificationError, match="another entry at position 1"):
        check_expected({1: CHAIN[0]}, 1, 6, entry_at)
    with pytest.raises(VerificationError, match="another entry at position 4") as info:
        check_expected({4: CHAIN[3]}, 0, 6, entry_at)
    assert info.value.position == 4


def test_a_head_the_chain_covers_must_be_its_entry():
    check_head(Head(5, CHAIN[5], 1), 6, entry_at)
    check_head(Head(8, b"not yet downloaded", 1), 6, entry_at)
    check_head(Head(6, b"the next entry", 1), 6, entry_at)       # one past the chain
    with pytest.raises(ChainError, match="head at position 3 is not the entry") as info:
        check_head(Head(3, CHAIN[2], 1), 6, entry_at)
    assert info.value.position == 3

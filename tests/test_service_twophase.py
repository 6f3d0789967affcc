"""The two-phase helper (keyserver.service.twophase): verify outside the write lock,
decide inside, verifying again only when a racing write changed the state."""

from keyserver.service.twophase import verify_then_decide


def run(states, decide=lambda db, verified: verified.recheck(db)):
    """``verify_then_decide`` over a store whose reads return ``states`` in turn."""
    reads, verified_states = iter(states), []

    def verify(state):
        verified_states.append(state)
        return f"verdict on {state}"

    result = verify_then_decide("db", lambda job: job("locked db"), lambda db: next(reads),
                                verify, decide)
    return result, verified_states


def test_an_unchanged_state_reuses_the_verdict_from_outside():
    assert run(["s1", "s1"]) == (("s1", "verdict on s1"), ["s1"])


def test_a_changed_state_is_verified_again_inside():
    assert run(["s1", "s2"]) == (("s2", "verdict on s2"), ["s1", "s2"])


def test_decide_runs_in_the_write_and_may_use_the_outside_verdict_alone():
    result, verified = run(["s1"], lambda db, verified: (db, verified.seen, verified.verdict))
    assert result == ("locked db", "s1", "verdict on s1") and verified == ["s1"]

"""kill -9 of the server and its workers during sustained writes, in a loop (issue 18):
after each kill of gunicorn's whole process group with writes in flight, every write
the server had acknowledged is in the database and the chain verifies, and the server
starts again on the same instance (tests/crashloop.py; ``scripts/bench crash`` runs
more rounds)."""

import sys
from pathlib import Path

from conftest import SERVER_NAME, init_live_instance
from crashloop import CrashLoop

BIN = Path(sys.executable).parent
ROUNDS = 5
WRITES_BEFORE_KILL = 15


def test_kill_9_during_sustained_writes_loses_no_acknowledged_write(tmp_path):
    instance = tmp_path / "crash" / "instance"
    init_live_instance(instance)
    loop = CrashLoop(BIN, instance, SERVER_NAME, writers=4)
    rounds = []
    for number in range(ROUNDS):
        done = loop.round(WRITES_BEFORE_KILL, tmp_path / f"gunicorn-{number}.log")
        rounds.append(done)
        assert done.verified, done.verify_output
        assert done.lost == [], done
        assert done.refused == [], done
        assert done.acknowledged >= WRITES_BEFORE_KILL, done
        # Every acknowledged entry is in the chain, after entry 0.
        assert done.chain_length >= 1 + len(loop.acknowledged), done
    # The kills came with writes on the way: at least one answer never came.
    assert sum(done.in_flight for done in rounds) > 0, rounds

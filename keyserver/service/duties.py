"""The server's periodic duties (§8, §8.1, §11.2), run by one background worker process
(``keyserver worker``), never in a request handler: signing checkpoints of the
tree, asking witnesses to cosign them, renewing the server's own UIDMessage before it expires, and taking expired
token keys off the chain's list.

Every duty is idempotent and re-checks inside its write transaction, so two workers
started by mistake append nothing twice.
"""

from __future__ import annotations

from typing import Sequence

import nacl.signing

from ..storage.db import Database, transaction
from . import checkpoints, cosigning, own, tokenkeys
from .policy import Policy
from .signing import ServerKey


def renew_own(db: Database, policy: Policy, keys: Sequence[ServerKey], now: int) -> bool:
    """Append the renewal of ``keyserver@`` (msgcount + 1, the same sigkey, §11.2) once
    less than ``OWN_RENEWAL_MARGIN`` of its lifetime is left; return whether it did."""
    def due() -> bool:
        latest = own.latest(db)
        return latest is not None and latest.not_after_ts - now < policy.own_renewal_margin_ms

    if not due():
        return False
    with transaction(db):
        if not due():
            return False
        own.update(db, policy, keys, own.current(db), now)
    return True


def checkpoint(db: Database, log_key: nacl.signing.SigningKey, interval_ms: int,
               now: int) -> list[str]:
    """Sign a checkpoint if one is due (§8); what was done, in words for the log."""
    made = checkpoints.make(db, log_key, interval_ms, now)
    return [f"checkpoint of tree size {made.tree_size}"] if made else []


def cosign(db: Database, policy: Policy, now: int,
           witnesses: Sequence[str] | None = None) -> list[str]:
    """Ask the due witnesses (of ``witnesses``, by default all) to cosign the newest
    checkpoint (§8.1); what they cosigned, in words for the log (failures are logged
    once per episode by ``cosigning``)."""
    done = []
    for outcome in cosigning.ask_witnesses(db, policy.cosigning, now, names=witnesses):
        if outcome.reply.cosignature is not None:
            again = f" again after {outcome.failures} failures" if outcome.failures else ""
            done.append(f"checkpoint of tree size {outcome.tree_size} cosigned by "
                        f"{outcome.witness}{again}")
    return done


def run(db: Database, policy: Policy, keys: Sequence[ServerKey], now: int) -> list[str]:
    """Run the daily duties once; return what was done, in words for the log."""
    done = []
    if renew_own(db, policy, keys, now):
        done.append(f"renewed keyserver@{policy.server_name}")
    if tokenkeys.retire_expired(db, policy, keys, now):
        done.append("retired expired token keys from the chain")
    return done

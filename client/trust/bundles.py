"""Which reply bundles to fetch, and whether a fetched one agrees with the chain
(§5.1). No I/O: the session fetches, and holds what passed.

Fetching a reply by its UIDIndex would tell the server whom the client looks up.
Bundles hide the reply among 256 positions, but the server knows every
identity's positions, so the set of bundles asked for could still point at one:
each bundle the client needs goes out with ``DECOYS`` others chosen at random
among those it has not cached, in one shuffled batch. A cached bundle is never
asked for again, so over time the client asks for fewer and fewer.
"""

from __future__ import annotations

import random
from typing import Callable, Collection, Iterable

from ..protocol.errors import VerificationError
from ..protocol.wire import BUNDLE_SIZE, ReplyBundle, UIDMessageReply

#: Bundles chosen at random to go with each bundle the client needs (§5.1: at least 4).
DECOYS = 4


def bundle_of(pos: int) -> int:
    return pos // BUNDLE_SIZE


def choose_bundles(needed: Iterable[int], cached: Collection[int], head_bundle: int,
                   rng: random.Random) -> list[int]:
    """The batch to fetch, shuffled: the ``needed`` bundles not ``cached`` and
    ``DECOYS`` random uncached others per needed one (all of them when fewer remain),
    among bundles ``0 .. head_bundle``. Nothing needed, nothing fetched: a batch of
    decoys alone would only cost."""
    wanted = sorted(set(needed) - set(cached))
    if any(not 0 <= bundle <= head_bundle for bundle in wanted):
        raise ValueError(f"a needed bundle is beyond the head's bundle {head_bundle}")
    if not wanted:
        return []
    others = sorted(set(range(head_bundle + 1)) - set(cached) - set(wanted))
    batch = wanted + rng.sample(others, min(len(others), DECOYS * len(wanted)))
    rng.shuffle(batch)
    return batch


def check_bundle(bundle: ReplyBundle, length: int,
                 entry: Callable[[int], bytes]) -> list[UIDMessageReply]:
    """The replies of ``bundle`` for positions on the verified chain of ``length``
    entries, each naming the chain's ``entry`` at its position; a bundle short of
    the chain is refused (a missing reply is the server's fault, §5.1). Replies
    past the local chain (the server's head moved on) cannot be checked: they are
    left out. Signatures are the session's to check, against the chain's keys, before
    it holds what it fetched."""
    end = min((bundle.bundle + 1) * BUNDLE_SIZE, length)
    first = bundle.bundle * BUNDLE_SIZE
    if first + len(bundle.replies) < end:
        raise VerificationError(f"reply bundle {bundle.bundle} ends at position "
                                f"{first + len(bundle.replies) - 1}, short of the chain's"
                                f" {end - 1}", position=first + len(bundle.replies))
    replies = list(bundle.replies[:end - first])
    for reply in replies:
        pos = reply.entry.hashchain_pos
        if reply.entry.hashchain_entry != entry(pos):
            raise VerificationError(f"reply bundle {bundle.bundle}: the reply for position"
                                    f" {pos} names another entry than the chain's",
                                    position=pos)
    return replies

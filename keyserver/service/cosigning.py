"""The log side of witnessing (§8.1): the background worker asks each configured
witness (``WITNESSES``) to cosign the newest checkpoint, C2SP ``tlog-witness``
``add-checkpoint``, with a consistency proof from the size that witness last
cosigned, and stores the cosignatures it gives beside the checkpoint.

Never inside a request or the write lock: the proofs are read first, the witnesses
are asked outside any transaction (all at once, a thread each, each within
``WITNESS_TIMEOUT``), and what they answered is stored in one short transaction. A
witness is asked only when due (``next_attempt_ts``), which the asking worker
claims in the database first, so that two workers do not ask one witness at once;
a failure puts the next attempt off, doubling from ``WITNESS_RETRY_MIN`` to
``WITNESS_RETRY_MAX``, and is logged once per episode.

A 409 tells the size the witness holds: the log asks again at once with a proof
from it. A size beyond the log's newest checkpoint that the log never made means
that the log lost entries it had published (a restored backup): the worker says so
loudly and records that size as published (``storage.published``), so that the
instance refuses to serve a shorter log from its next start.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from client.protocol.checkpoint import Note, Signature, parse_note, parse_signature_lines
from client.protocol.cosignature import (SIZE_CONTENT_TYPE, check_cosignature,
                                         format_add_checkpoint, parse_size)
from client.protocol.errors import VerificationError

from ..storage import checkpoints, cosignatures, published
from ..storage.db import Database, transaction
from . import origins
from .checkpoints import consistency_proof
from .policy import CosigningPolicy, Witness

log = logging.getLogger(__name__)

#: A witness answers with a few signature lines, or a size: far less than this.
MAX_ANSWER_BYTES = 16 * 1024
#: ``post(url, body, timeout_s)``: a witness's answer (``post_checkpoint``).
Post = Callable[[str, bytes, float], origins.Answer]


def post_checkpoint(url: str, body: bytes, timeout_s: float) -> origins.Answer:
    """``POST <url>/add-checkpoint`` (C2SP tlog-witness), answered within ``timeout_s``
    from now (the deadline is taken here, in the thread that asks)."""
    return origins.ask(f"{url}/add-checkpoint", time.monotonic() + timeout_s,
                       MAX_ANSWER_BYTES, "POST", body)


@dataclass(frozen=True)
class Reply:
    """What a witness's answer means: its cosignature (and timestamp), or the size it
    holds (a 409), or why it failed."""

    cosignature: Signature | None = None
    timestamp: int = 0
    holds: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Outcome:
    """One witness asked about the checkpoint of ``tree_size``, as stored."""

    witness: str
    tree_size: int
    reply: Reply
    #: Failures in a row, this one included (0: it cosigned); for a success, the
    #: failures it ended.
    failures: int
    next_attempt_ts: int


def read_answer(answer: origins.Answer, witness: Witness, note: Note) -> Reply:
    """A witness's answer to ``add-checkpoint`` for ``note``: a 200's valid cosignature
    by the witness's configured key (any other line ignored, C2SP), a 409's size;
    anything else is a failure."""
    if answer.status == 200:
        try:
            lines = parse_signature_lines(answer.body.decode())
        except (UnicodeDecodeError, VerificationError) as exc:
            return Reply(error=f"answered 200 without cosignature lines: {exc}")
        for line in lines:
            try:
                timestamp = check_cosignature(Note(note.checkpoint, note.body, (line,)),
                                              witness.vkey)
            except VerificationError:
                continue
            return Reply(line, timestamp)
        return Reply(error="answered 200 without a valid cosignature by its configured key")
    if answer.status == 409:
        if answer.content_type.split(";")[0].strip() != SIZE_CONTENT_TYPE:
            return Reply(error=f"answered 409 without a {SIZE_CONTENT_TYPE} size")
        try:
            return Reply(holds=parse_size(answer.body))
        except VerificationError as exc:
            return Reply(error=f"answered 409: {exc}")
    excerpt = answer.body[:200].decode("utf-8", "replace").strip()
    return Reply(error=f"answered {answer.status}" + (f": {excerpt}" if excerpt else ""))


def backoff_ms(policy: CosigningPolicy, failures: int) -> int:
    """How long to wait after ``failures`` (>= 1) failures in a row."""
    return min(policy.retry_max_ms, policy.retry_min_ms << min(failures - 1, 40))


def ask_witnesses(db: Database, policy: CosigningPolicy, now: int,
                  post: Post = post_checkpoint,
                  names: Sequence[str] | None = None) -> list[Outcome]:
    """Ask every due witness (of ``names``, by default all) that has not cosigned the
    newest checkpoint to cosign it; store what they answer; return the outcomes
    (none: nothing was due)."""
    newest = checkpoints.newest(db)
    if newest is None:
        return []
    size = newest.tree_size
    due = [name for name in (policy.witnesses if names is None else names)
           if not cosignatures.cosigned(db, size, name)
           and cosignatures.state(db, name).next_attempt_ts <= now]
    if not due:
        return []
    # Held off for others while asked: at most two requests, a timeout each.
    until = now + 2 * policy.timeout_ms + policy.retry_min_ms
    with transaction(db):
        due = [name for name in due if cosignatures.claim(db, name, now, until)]
    served = parse_note(newest.note)
    # The note as the log signed it: the witness adds its own cosignature.
    note = Note(served.checkpoint, served.body, tuple(
        s for s in served.signatures if s.name == served.checkpoint.origin))
    olds = {name: cosignatures.state(db, name).cosigned_size for name in due}
    replies = _ask_all(db, policy, note, olds, post)
    # A 409 taught the size the witness holds: ask again at once, with a proof from it.
    again = {name: reply.holds for name, reply in replies.items()
             if reply.holds is not None and reply.holds <= size}
    for name, reply in _ask_all(db, policy, note, again, post).items():
        replies[name] = (Reply(error=f"answered 409 twice: it holds size {reply.holds}",
                               holds=reply.holds) if reply.holds is not None else reply)
    for name, reply in list(replies.items()):
        if reply.holds is not None and reply.holds > size and reply.error is None:
            replies[name] = _ahead(db, name, reply.holds, size)
    return _store(db, policy, size, replies, now)


def _ask_all(db: Database, policy: CosigningPolicy, note: Note, olds: Mapping[str, int],
             post: Post) -> dict[str, Reply]:
    """Ask each witness of ``olds`` at once, a thread each, with a proof from its
    size; the proofs are read first, and no transaction is open while asking."""
    size = note.checkpoint.tree_size
    replies, bodies = {}, {}
    for name, old in olds.items():
        if old > size:
            replies[name] = Reply(holds=old)
        else:
            bodies[name] = format_add_checkpoint(old, consistency_proof(db, old, size),
                                                 note.text())
    if not bodies:
        return replies
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        asked = {name: pool.submit(post, policy.witnesses[name].url, body,
                                   policy.timeout_ms / 1000)
                 for name, body in bodies.items()}
    for name, future in asked.items():
        try:
            replies[name] = read_answer(future.result(), policy.witnesses[name], note)
        except origins.OriginError as exc:
            replies[name] = Reply(error=str(exc))
    return replies


def _ahead(db: Database, name: str, holds: int, size: int) -> Reply:
    """A witness holds a checkpoint of ``holds``, beyond the newest one here (``size``).
    One this log made since (another worker asked): nothing to do. One it never made
    here: the log lost published entries. Record the size as published, so that this
    instance refuses to serve a shorter log, and say so loudly."""
    if checkpoints.of_size(db, holds) is not None:
        return Reply()
    folder = published.database_folder(db.conn)
    if folder is not None:
        published.record(folder, holds)
    log.error("witness %s holds a checkpoint of this log of size %d, but the newest "
              "checkpoint here is of size %d: this log lost entries it had published "
              "(restored from an old backup?); the published size is now %d, and the "
              "instance will refuse to serve a shorter log", name, holds, size, holds)
    return Reply(error=f"holds a checkpoint of size {holds}, beyond this log's newest "
                       f"({size}): the log was rolled back")


def _store(db: Database, policy: CosigningPolicy, size: int, replies: Mapping[str, Reply],
           now: int) -> list[Outcome]:
    """Store every witness's reply in one transaction, then log the failures that
    begin an episode."""
    outcomes = []
    with transaction(db):
        for name, reply in replies.items():
            if reply.cosignature is not None:
                cosignatures.insert(db, size, name, reply.cosignature.line(), reply.timestamp)
                ended = cosignatures.succeeded(db, name, size, now)
                outcomes.append(Outcome(name, size, reply, ended, now))
            elif reply.error is not None:
                failures = cosignatures.state(db, name).failures + 1
                next_ts = now + backoff_ms(policy, failures)
                holds = reply.holds if reply.holds is not None and reply.holds <= size else None
                cosignatures.failed(db, name, reply.error, next_ts, holds)
                outcomes.append(Outcome(name, size, reply, failures, next_ts))
            else:
                # Nothing to do after all (another worker's checkpoint is newer): due
                # again at once.
                cosignatures.release(db, name, now)
    for outcome in outcomes:
        if outcome.reply.cosignature is None and outcome.failures == 1:
            log.warning("witness %s does not cosign (%s); retrying with backoff, see "
                        "'keyserver witness status'", outcome.witness, outcome.reply.error)
    return outcomes

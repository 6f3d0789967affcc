"""Synthetic load: real UIDMessages for generated identities, appended through
the same ``service.uids.store_uid_message`` path as a registration, in large
transactions, so benchmarks and tests can build big chains quickly.

Building and signing the messages is the clients' share of the work; it runs in
a process pool beside the appending process.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
from typing import Callable

import nacl.signing

from client.protocol.keys import ed25519_entry
from client.protocol.uidmessage import build_uid_content, parse_uid_message, sign_uid_content

from .clock import now_ms
from .service import uids
from .service.signing import Sign
from .storage import chain, db

_ALPHABET = "abcdefghiklmnopqrstuvwxyz23456789"  # no j, 0, 1: they normalize away
DAY_MS = 24 * 3600 * 1000


def synthetic_identity(prefix: str, number: int, domain: str) -> str:
    digits = ""
    while True:
        number, rest = divmod(number, len(_ALPHABET))
        digits = _ALPHABET[rest] + digits
        if number == 0:
            return f"{prefix}-{digits}@{domain}"


def build_registrations(args: tuple[str, str, int, int, bytes, int]) -> list[dict]:
    """Signed create messages of the identities ``prefix-<number>@domain`` for ``count``
    numbers from ``first``, naming ``lastentry``, valid from ``now``: one tuple, so that
    a process pool can map it (``load``; the crash loop of tests/crashloop.py)."""
    prefix, domain, first, count, lastentry, now = args
    messages = []
    for number in range(first, first + count):
        key = nacl.signing.SigningKey.generate()
        content = build_uid_content(
            synthetic_identity(prefix, number, domain), ed25519_entry(key), msgcount=0,
            not_before_ts=now, not_after_ts=now + 300 * DAY_MS, lastentry=lastentry,
        )
        messages.append(sign_uid_content(content, key))
    return messages


def load(database: db.Database, sign: Sign, count: int, domain: str, *, batch: int = 2000,
         progress: Callable[[int], None] = lambda done: None) -> int:
    """Append ``count`` new identities, their replies signed with ``sign``; return the
    new chain length."""
    prefix = "load" + "".join(secrets.choice(_ALPHABET[:25]) for _ in range(6))
    workers = max(1, (os.cpu_count() or 1))
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        now = now_ms()
        lastentry = chain.head(database).hash
        jobs = [(prefix, domain, first, min(batch, count - first), lastentry, now)
                for first in range(0, count, batch)]
        for messages in pool.imap(build_registrations, jobs):
            now = now_ms()
            parsed = [parse_uid_message(message) for message in messages]
            with db.transaction(database):
                for message in parsed:
                    uids.store_uid_message(database, message, now, sign)
            progress(len(parsed))
    return chain.head(database).pos + 1

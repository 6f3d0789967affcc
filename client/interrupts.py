"""Ctrl-C, a closed terminal (SIGHUP) and SIGTERM, as a command sees them.

While a command runs, each of the three raises ``Interrupted`` in the main thread
(a ``KeyboardInterrupt``, so every ``finally`` and ``except BaseException`` cleans
up as for Ctrl-C): a sync keeps what it verified, a pool of workers is
terminated, and the CLI ends with one line and status 128 + the signal's number.
Worker processes ignore the terminal's signals (``worker_init``): the parent
decides and stops them, so no worker prints a traceback of its own.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

#: The signals that stop a command cleanly.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: How each is named to the user.
NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


class Interrupted(KeyboardInterrupt):
    """A signal asked the command to stop."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(NAMES.get(signum, f"signal {signum}"))
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


#: Seconds after which a signal is raised again while the command still runs: a
#: ``KeyboardInterrupt`` raised inside a ``__del__`` or a callback of the garbage
#: collector is printed and swallowed by Python, and the command would go on.
RAISE_AGAIN_AFTER = 1.0


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """While the block runs, SIGINT, SIGTERM and SIGHUP raise ``Interrupted``
    (again every ``RAISE_AGAIN_AFTER`` seconds until the block ends); the previous
    handlers come back after it. (Only the main thread can set handlers: elsewhere
    the block runs as it is.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    main = threading.get_ident()
    ended = threading.Event()
    timers: list[threading.Timer] = []

    def again(signum: int) -> None:
        if not ended.is_set():
            signal.pthread_kill(main, signum)

    def handler(signum: int, frame) -> None:
        if ended.is_set():
            return
        timer = threading.Timer(RAISE_AGAIN_AFTER, again, (signum,))
        timer.daemon = True
        timers.append(timer)
        timer.start()
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    try:
        yield
    finally:
        ended.set()   # from here on a signal is dropped: the command is ending anyway
        for timer in timers:
            timer.cancel()
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Hold the three signals back while the block starts worker processes: a
    worker is forked with the parent's handlers and must not run them before
    ``worker_init`` replaces them. Signals that arrive meanwhile are delivered
    when the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def worker_init() -> None:
    """Initializer of a worker process forked by a command (in ``signals_blocked``):
    the terminal's Ctrl-C and hang-up are for the parent, which terminates the
    workers with SIGTERM, which therefore ends a worker at once, without a
    traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)

"""Thin entry points: compose the config, call a workflow, turn user errors into one line.

Every command reports a user mistake the same way: ``medmtl: error: <what>: <problem>. <what
to do>`` on stderr and exit status 2 (:func:`fail`), never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from medmtl.errors import MedmtlError, Stopped, disk_error

# what a scheduler (SIGTERM at the time limit, SIGUSR2 before it with --signal), a closed
# terminal (SIGHUP) or a user (Ctrl+C) sends to stop a command
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR2")


def fail(message: str, status: int = 2) -> NoReturn:
    """Print ``medmtl: error: <message>`` on stderr and exit (status 2: a user mistake)."""
    print(f"medmtl: error: {message}", file=sys.stderr)
    sys.exit(status)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the block runs, each of :data:`STOP_SIGNALS` raises :class:`Stopped` in this
    process, so that the code it interrupts finishes its files and says what it kept (instead
    of dying mid-write); the handlers before it come back after. A second signal while that
    happens is ignored; a process forked from this one (a data loader's worker) ends on the
    signal as it would have without medmtl."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return
    owner = os.getpid()
    numbers = [getattr(signal, name) for name in STOP_SIGNALS]

    def stop(signum: int, _frame: Any) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        for number in numbers:
            signal.signal(number, signal.SIG_IGN)
        raise Stopped(signum)

    before = {number: signal.getsignal(number) for number in numbers}
    for number in numbers:
        signal.signal(number, stop)
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


def stopped(exc: Stopped) -> NoReturn:
    """``medmtl: <how it stopped; what it kept>`` on stderr, and the exit status of a process
    the signal ended (128 + its number)."""
    print(f"medmtl: {exc}", file=sys.stderr)
    sys.exit(exc.status)


def run_or_exit(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; a :class:`MedmtlError`, or a write a full or read-only disk refused,
    becomes one line through :func:`fail`; a stop by a signal, one line through
    :func:`stopped`."""
    try:
        return fn(*args)
    except Stopped as exc:
        stopped(exc)
    except MedmtlError as exc:
        fail(str(exc))
    except OSError as exc:
        if (disk := disk_error(exc)) is None:
            raise
        fail(str(disk))


def report_files(skipped: list, problems: list, word: str) -> None:
    """List skipped files (stdout) and refused/failed ones (stderr), each with its reason."""
    for path, reason in skipped:
        print(f"  skipped {path}: {reason}")
    for path, reason in problems:
        # most reasons already start with the file name
        print(
            f"  {word} {reason}" if str(path) in reason else f"  {word} {path}: {reason}",
            file=sys.stderr,
        )

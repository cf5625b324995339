"""Thin entry points: compose the config, call a workflow, turn user errors into one line.

Every command reports a user mistake the same way: ``medmtl: error: <what>: <problem>. <what
to do>`` on stderr and exit status 2 (:func:`fail`), never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

from medmtl.errors import MedmtlError, disk_error


def fail(message: str, status: int = 2) -> NoReturn:
    """Print ``medmtl: error: <message>`` on stderr and exit (status 2: a user mistake)."""
    print(f"medmtl: error: {message}", file=sys.stderr)
    sys.exit(status)


def run_or_exit(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; a :class:`MedmtlError`, or a write a full or read-only disk refused,
    becomes one line through :func:`fail`."""
    try:
        return fn(*args)
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

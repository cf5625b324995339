"""Thin entry points: compose the config, call the package, turn user errors into one line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from medmtl.errors import MedmtlError


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


def run_or_exit(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; a :class:`MedmtlError` prints one line to stderr and exits with status 2."""
    try:
        return fn(*args)
    except MedmtlError as exc:
        print(f"medmtl: error: {exc}", file=sys.stderr)
        sys.exit(2)

"""Writing result files so that a crash never leaves a half-written file under the final name."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding=encoding, newline="")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def ensure_output_dir(path: str | Path, option: str = "out") -> Path:
    """Create the output folder ``path`` (the value of ``option``) or say why it cannot be used.

    Refuses an existing file, a folder that cannot be created and one that is not writable,
    before any slow work starts.
    """
    from medmtl.errors import ConfigError

    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option}={path} is an existing file; give a folder for the results.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".medmtl-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"{option}={path}: cannot write there ({exc.strerror or exc}); choose a folder you "
            "can write to."
        ) from exc
    return path

"""A small ``key=value`` argument parser with Hydra's look, for the inference tools.

``medmtl-predict`` must run with ONNX Runtime alone (no Hydra, Lightning or torch imported),
so the inference entry points parse their few options here instead of composing a config.
"""

from __future__ import annotations

from typing import Any

from medmtl.errors import ConfigError

REQUIRED = object()


def _convert(key: str, text: str, default: Any) -> Any:
    low = text.strip().lower()
    if low in ("null", "none", "~"):
        return None
    if isinstance(default, bool):
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"{key}={text}: expected true or false.")
    if isinstance(default, list) or (text.startswith("[") and text.endswith("]")):
        inner = text.strip()[1:-1] if text.strip().startswith("[") else text
        return [p.strip() for p in inner.split(",") if p.strip()]
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError as exc:
            raise ConfigError(f"{key}={text}: expected an integer.") from exc
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError as exc:
            raise ConfigError(f"{key}={text}: expected a number.") from exc
    return text


def parse_kv(argv: list[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """Parse ``key=value`` arguments against ``defaults`` (``REQUIRED`` marks mandatory keys)."""
    values = dict(defaults)
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"'{arg}': expected key=value (keys: {', '.join(defaults)}).")
        key, text = arg.split("=", 1)
        key = key.lstrip("+")
        if key not in defaults:
            raise ConfigError(f"unknown option '{key}'; known options: {', '.join(defaults)}.")
        values[key] = _convert(key, text, defaults[key])
    missing = [k for k, v in values.items() if v is REQUIRED]
    if missing:
        raise ConfigError(f"missing required option(s): {', '.join(f'{k}=...' for k in missing)}.")
    return values


def kv_main(doc: str, run, argv: list[str] | None = None, needs_args: bool = True) -> None:
    """Entry point wrapper: help on -h, and on no arguments when the command ``needs_args``;
    one-line errors with exit status 2."""
    import sys

    from medmtl.cli import run_or_exit

    args = sys.argv[1:] if argv is None else argv
    if (not args and needs_args) or args[:1] in (["-h"], ["--help"]):
        print(doc.strip())
        sys.exit(0 if args else 2)
    sys.exit(run_or_exit(run, args))

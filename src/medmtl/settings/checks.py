"""The value checks every setting goes through: one line naming the key, the value and what
is expected (a :class:`~medmtl.errors.ConfigError`, which every command prints as
``medmtl: error: …`` and exits 2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from medmtl.errors import ConfigError


def number(
    key: str,
    value: Any,
    kind: type = float,
    low: float | None = None,
    high: float | None = None,
    what: str | None = None,
) -> Any:
    """``value`` as ``kind`` (int or float) within [``low``, ``high``], else one line naming
    ``key`` and what is expected (``what``, else said from the bounds); booleans and
    non-integral values for an int are refused."""
    try:
        if isinstance(value, bool):
            raise ValueError
        got = kind(value)
        if kind is int and got != float(value):
            raise ValueError
        if got != got:  # NaN
            raise ValueError
    except (TypeError, ValueError):
        got = None
    if got is None or (low is not None and got < low) or (high is not None and got > high):
        if low is not None and high is not None:
            span = f" between {low} and {high}"
        elif low is not None:
            span = f" {low} or more"
        elif high is not None:
            span = f" {high} or less"
        else:
            span = ""
        kind_name = "an integer" if kind is int else "a number"
        raise ConfigError(f"{key}={value}: {what or f'expected {kind_name}{span}'}.")
    return got


def unknown_keys(values: Mapping[str, Any], schema: type) -> tuple[list[str], list[str]]:
    """The keys of ``values`` that are not fields of the dataclass ``schema`` (sorted), and
    the field names (in schema order)."""
    names = [f.name for f in fields(schema)]
    return sorted(set(values) - set(names)), names


def known_keys(group: str, values: dict[str, Any], schema: type) -> dict[str, Any]:
    """``values`` if every key is a field of ``schema``, else one line naming the unknown ones."""
    unknown, names = unknown_keys(values, schema)
    if unknown:
        raise ConfigError(
            f"{group}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(names)}."
        )
    return values


def choice(key: str, value: Any, allowed: Sequence[Any]) -> Any:
    """``value`` if it is one of ``allowed``, else one line naming ``key`` and the valid ones."""
    if value not in allowed:
        raise ConfigError(
            f"{key}={value!r} is unknown; choose one of {', '.join(map(str, allowed))}."
        )
    return value

"""The value checks every setting goes through: one line naming the key, the value and what
is expected (a :class:`~medmtl.errors.ConfigError`, which every command prints as
``medmtl: error: …`` and exits 2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import field, fields
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

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


def opt(
    default: Any = None,
    help: str = "",
    low: float | None = None,
    high: float | None = None,
    choices: Sequence[Any] | None = None,
    what: str | None = None,
    **metadata: Any,
) -> Any:
    """A setting: a dataclass field with its default, its ``help`` (the commands' ``--help``
    lists it) and what :func:`check_fields` holds its values to: ``low``/``high`` for a number,
    ``choices`` for a word; ``what`` says it in the message. ``metadata``: the rest (a path's
    kind, the data section...)."""
    meta = {"help": help, **metadata, "low": low, "high": high, "choices": tuple(choices or ()),
            "what": what}  # fmt: skip
    if isinstance(default, (list, dict)) or hasattr(default, "__dataclass_fields__"):
        import copy

        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def ranged(default: Any, low: float | None = None, high: float | None = None, **kw: Any) -> Any:
    """:func:`opt` for a setting without help text (the schemas' comments say it)."""
    return opt(default, low=low, high=high, **kw)


def own_values(values: Mapping[str, Any], schema: type) -> dict[str, Any]:
    """The keys of ``values`` (a dict, or a composed config) that are fields of ``schema``, as
    plain values (a config's resolved); the rest (a command's other settings) is left out."""
    from omegaconf import OmegaConf

    names = {f.name for f in fields(schema)}
    return {
        k: OmegaConf.to_container(values[k], resolve=True)
        if OmegaConf.is_config(values[k])
        else values[k]
        for k in values
        if k in names
    }


def flag(key: str, value: Any) -> bool:
    """``value`` if it is true or false, else one line naming ``key``."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r}: expected true or false.")
    return value


def check_fields(prefix: str, values: Mapping[str, Any], schema: type) -> dict[str, Any]:
    """Every value of ``values`` against its field of the dataclass ``schema``, in one line each:
    the type its annotation names (a nested dataclass is checked the same way, and its unknown
    keys are refused), the range and the choices of :func:`ranged`. Returns the values, numbers
    as their field's type; keys ``values`` lacks keep their defaults (they are not added)."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix}={values!r}: expected a group of settings (key: value).")
    known_keys(prefix, dict(values), schema)
    hints = get_type_hints(schema)
    out = dict(values)
    for f in fields(schema):
        if f.name in values:
            name = f.metadata.get("key", f.name)
            key = f"{prefix}.{name}" if prefix else name  # no prefix: a config's top level
            out[f.name] = _check_value(key, values[f.name], hints[f.name], f.metadata)
    return out


def check_own_fields(settings: Any, prefix: str) -> None:
    """:func:`check_fields` on a settings object's own values (its ``__post_init__``), which
    then hold the checked values."""
    values = {f.name: getattr(settings, f.name) for f in fields(settings)}
    for name, value in check_fields(prefix, values, type(settings)).items():
        object.__setattr__(settings, name, value)  # frozen settings too


def _check_value(key: str, value: Any, annotation: Any, meta: Mapping[str, Any]) -> Any:
    kinds = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    if value is None:
        if type(None) not in kinds and annotation is not Any:
            raise ConfigError(f"{key}: a value is needed here, not null.")
        return value
    kind = next(k for k in kinds if k is not type(None))
    origin = get_origin(kind) or kind
    if hasattr(kind, "__dataclass_fields__"):
        return check_fields(key, value, kind)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value}: {meta.get('what') or 'expected true or false'}.")
    elif kind in (int, float):
        return number(key, value, kind, meta.get("low"), meta.get("high"), meta.get("what"))
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value}: expected a word or a path.")
        if meta.get("choices"):
            choice(key, value, meta["choices"])
    elif origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}={value}: expected a group of settings (key: value).")
    elif origin in (list, tuple, Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{key}={value}: expected a list, e.g. [a, b].")
        item = (get_args(kind) or (Any,))[0]
        return [_check_value(key, v, item, meta) for v in value]
    return value

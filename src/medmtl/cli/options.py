"""Every command's options, parsed one way: ``key=value`` (Hydra's look), one help layout and
one error line.

The commands that compose a Hydra config (train, eval, data, preprocess) take Hydra's
overrides; the others (predict, serve, export, ensemble, calibrate, compare, tables, bench,
unlike) take the fields of their settings dataclass (:mod:`medmtl.settings.commands`) as
``key=value``, with bare words for the folders or files a command takes. ``--key value``,
``--key=value`` and ``--flag`` (a true/false option) are the same as ``key=value``: older
command lines keep working. Every ``--help`` has the same layout (:func:`usage`), and every
mistake is one ``medmtl: error: …`` line with exit status 2.
"""

from __future__ import annotations

import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, Field, fields, is_dataclass
from pathlib import Path
from typing import Any

from medmtl.errors import ConfigError
from medmtl.settings.commands import check_paths

NULL = ("null", "none", "~")
WIDTH = 96  # the help's line width
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _kind(cls: type, f: Field) -> tuple[type, bool]:
    """The field's base type (bool, int, float, list, dict or str) and whether None is allowed."""
    hint = typing.get_type_hints(cls)[f.name]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = typing.get_args(hint) if union else ()  # list[str]'s argument is not an option
    optional = type(None) in args or hint is Any
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    origin = typing.get_origin(base) or base
    for kind in (bool, int, float, list, dict):
        if origin is kind:
            return kind, optional
    return str, optional


def convert(key: str, text: str, kind: type, optional: bool = True) -> Any:
    """``text`` given for ``key`` as a value of ``kind`` (one line if it is not one)."""
    low = text.strip().lower()
    if low in NULL and optional:
        return None
    if kind is bool:
        if low in TRUE:
            return True
        if low in FALSE:
            return False
        raise ConfigError(f"{key}={text}: expected true or false.")
    if kind is list:
        inner = text.strip()
        inner = inner[1:-1] if inner.startswith("[") and inner.endswith("]") else inner
        return [p.strip() for p in inner.split(",") if p.strip()]
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError as exc:
            what = "an integer" if kind is int else "a number"
            raise ConfigError(f"{key}={text}: expected {what}.") from exc
    return text


def required(f: Field) -> bool:
    return f.default is MISSING and f.default_factory is MISSING  # type: ignore[misc]


def _pairs(
    argv: Sequence[str], flags: dict[str, tuple[str, tuple[str, ...]]]
) -> tuple[list[tuple[str, str]], list[str]]:
    """``key=value`` pairs (``--key value``, ``--key=value`` and ``--flag`` included) and the
    bare words. ``flags``: the options that may stand alone, with the value they then mean and
    the words that may follow as their value."""
    pairs, words = [], []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg.startswith("--") and len(arg) > 2:
            key, eq, value = arg[2:].partition("=")
            key = key.replace("-", "_")
            if not eq:
                if key in flags:
                    alone, follows = flags[key]
                    value = args.pop(0) if args and args[0].lower() in follows else alone
                elif key.startswith("no_") and key[3:] in flags:
                    key, value = key[3:], "false"
                elif args:
                    value = args.pop(0)
                else:
                    raise ConfigError(f"--{key}: give a value (or write {key}=<value>).")
            pairs.append((key, value))
        elif "=" in arg and not arg.startswith("="):
            key, _, value = arg.partition("=")
            pairs.append((key.lstrip("+"), value))
        else:
            words.append(arg)
    return pairs, words


def parse(argv: Sequence[str], cls: type, positional: str | None = None) -> Any:
    """The settings ``cls`` (a dataclass) from ``argv``; bare words go to the list field
    ``positional`` (refused when the command takes none). The dataclass checks the values."""
    known = {f.name: f for f in fields(cls)}
    flags = {n: ("true", TRUE + FALSE) for n, f in known.items() if _kind(cls, f)[0] is bool}
    flags.update(
        {
            n: (f.metadata["alone"], tuple(f.metadata.get("choices", ())))
            for n, f in known.items()
            if "alone" in f.metadata
        }  # fmt: skip
    )
    pairs, words = _pairs(argv, flags)
    values: dict[str, Any] = {}
    for key, text in pairs:
        if key not in known or key == positional:
            names = ", ".join(n for n in known if n != positional)
            raise ConfigError(f"unknown option '{key}'; known options: {names}.")
        kind, optional = _kind(cls, known[key])
        values[key] = convert(key, text, kind, optional)
    if words:
        if positional is None:
            raise ConfigError(f"'{words[0]}': expected key=value (options: {', '.join(known)}).")
        values[positional] = words
    missing = [n for n, f in known.items() if required(f) and n not in values]
    if missing:
        raise ConfigError(
            "missing required option(s): "
            + ", ".join(f"<{n}>" if n == positional else f"{n}=..." for n in missing)
            + "."
        )
    return check_paths(cls(**values))


def _default_text(f: Field) -> str:
    if required(f):
        return "required"
    value = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def option_lines(
    cls: type, positional: str | None = None, prefix: str = ""
) -> list[tuple[str, str]]:
    """(``key=<default>``, help) for every field of ``cls``; a group of settings (a nested
    dataclass) as its own keys, ``group.key=<default>``."""
    out = []
    for f in fields(cls):
        if f.name == positional:
            continue
        group = f.default_factory if f.default is MISSING else None  # type: ignore[misc]
        if group is not None and is_dataclass(group):
            out += option_lines(group, prefix=f"{prefix}{f.name}.")
            continue
        out.append((f"{prefix}{f.name}={_default_text(f)}", str(f.metadata.get("help", ""))))
    return out


def usage(
    prog: str,
    doc: str,
    options: list[tuple[str, str]],
    synopsis: str = "[key=value ...]",
    sections: Sequence[tuple[str, list[tuple[str, str]]]] = (),
) -> str:
    """Every command's help: the usage line, the summary, the options (``key=default`` and
    what it does), further sections, then the rest of the command's description."""
    lines = doc.strip().splitlines()
    summary = lines[0].split(": ", 1)[-1] if lines else ""
    body = "\n".join(lines[1:]).strip()
    out = [f"usage: {prog} {synopsis}", "", summary]
    for title, rows in [("options", options), *sections]:
        if not rows:
            continue
        out += ["", f"{title}:"]
        width = min(max(len(k) for k, _ in rows) + 2, 34)
        for key, text in rows:
            wrapped = textwrap.wrap(text, WIDTH - width - 2) or [""]
            pad = " " * (width - len(key)) if len(key) < width else "\n" + " " * (width + 2)
            out.append(f"  {key}{pad}{wrapped[0]}".rstrip())
            out += [" " * (width + 2) + line for line in wrapped[1:]]
    if body:
        paragraphs = [p if "\n" in p else textwrap.fill(p, WIDTH) for p in body.split("\n\n")]
        out += ["", "\n\n".join(paragraphs)]
    return "\n".join(out) + "\n"


def command_main(
    prog: str,
    doc: str,
    run: Callable[[list[str]], int | None],
    argv: list[str] | None = None,
    help_text: Callable[[], str] | None = None,
    needs_args: bool = True,
    exit: bool = True,
) -> int:
    """Entry point: help on ``-h``/``--help`` (and on no arguments when the command
    ``needs_args``), else ``run(argv)``; a user mistake is one line with exit status 2.
    ``exit``: leave with the status (else return it; mistakes still exit 2)."""
    from medmtl.cli import run_or_exit, stop_on_signals

    args = sys.argv[1:] if argv is None else list(argv)
    if (not args and needs_args) or any(a in ("-h", "--help") for a in args):
        print(help_text() if help_text else doc.strip())
        status = 0 if args else 2
    else:
        with stop_on_signals():
            status = run_or_exit(run, args) or 0
    if exit:
        sys.exit(status)
    return status


def settings_main(
    prog: str,
    doc: str,
    cls: type,
    run: Callable[[list[str]], int | None],
    argv: list[str] | None = None,
    positional: str | None = None,
    synopsis: str = "[key=value ...]",
    needs_args: bool = True,
) -> int:
    """:func:`command_main` for a command whose options are the settings ``cls`` (its help
    lists them); ``run`` gets the arguments and parses them with :func:`parse`."""
    return command_main(
        prog,
        doc,
        run,
        argv,
        lambda: usage(prog, doc, option_lines(cls, positional), synopsis),
        needs_args,
    )


# -- the commands that compose a Hydra config ----------------------------------------------------
HYDRA_FLAGS = ("-m", "--multirun")


def _groups(config_name: str) -> list[tuple[str, str]]:
    """(``group=<default>``, its choices) for every config group ``config_name`` composes."""
    from medmtl.config import CONFIG_DIR, compose

    choices = compose(config_name, return_hydra_config=True).hydra.runtime.choices
    rows = []
    for group, chosen in sorted(choices.items()):
        if group.startswith("hydra") or group.endswith("schema"):
            continue
        folder = Path(CONFIG_DIR) / group
        names = sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))
        rows.append((f"{group}={chosen or 'null'}", " | ".join(names)))
    return rows


def hydra_usage(prog: str, doc: str, config_name: str, settings: type | None = None) -> str:
    """The help of a Hydra command in every command's layout: its config groups and, where it
    has a settings dataclass, its options."""
    options = option_lines(settings) if settings is not None else []
    sections = [("config groups (group=<file>)", _groups(config_name))]
    synopsis = "[-m] [group=<file> ...] [key=value ...]"
    doc = doc.rstrip() + (
        "\n\nAny key of the composed config is set as key=value (Hydra's override syntax; -m "
        f"sweeps comma-separated values). {prog} --hydra-help: Hydra's own help; --cfg job "
        "prints the composed config."
    )
    return usage(prog, doc, options, synopsis, sections)


def _first_values(overrides: list[str]) -> list[str] | None:
    """The overrides with every sweep replaced by its first value (one job's command line),
    or None when a sweep cannot be listed (an Optuna interval): Hydra then checks alone."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if not o.is_sweep_override():
            out.append(o.input_line)
            continue
        try:
            first = next(iter(o.sweep_string_iterator()))
        except Exception:  # noqa: BLE001  (a sweep Hydra's sweeper expands itself)
            return None
        out.append(f"{o.get_key_element()}={first}")
    return out


def hydra_message(exc: BaseException) -> str:
    """Hydra's or OmegaConf's report as one sentence (a list after a colon joined by commas;
    the key paths and the stack-trace hint left out)."""
    parts: list[str] = []
    listing = False
    cause = str(exc.__cause__ or "").strip().splitlines()
    for line in str(exc).strip().splitlines() + cause[:1]:
        line = line.strip()
        if line.startswith("Config search path"):
            break
        if not line or line == "schema" or line.startswith(("full_key", "object_type", "Set the")):
            continue
        if parts and (parts[-1].endswith(":") or listing) and " " not in line:
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
            listing = True
            continue
        listing = False
        parts.append(line.rstrip("."))
    return "; ".join(parts) + "."


# what a value given on the command line may hold without quotes in Hydra's grammar; a path
# with anything else (BUSI's "benign (1).png", a folder with a space) is quoted for the user
_PLAIN_VALUE = re.compile(r"[\w./:~+@%^-]*")


def quote_paths(args: Sequence[str]) -> list[str]:
    """The overrides with a value Hydra's grammar cannot read bare, but can read quoted, put in
    quotes (``data.root=/data/my busi (copy)`` -> ``data.root='/data/my busi (copy)'``): a
    path as users have them. A value with quotes, backslashes, commas or brackets (Hydra's own
    lists, sweeps and functions) is left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if (
            eq
            and not arg.startswith("-")
            and not _PLAIN_VALUE.fullmatch(value)
            and not any(c in value for c in "'\"\\,[]{}=")
        ):
            try:
                parser.parse_overrides([arg])
            except HydraException:
                quoted = f"{key}='{value}'"
                try:
                    parser.parse_overrides([quoted])
                    arg = quoted
                except HydraException:
                    pass
        out.append(arg)
    return out


def check_overrides(
    config_name: str,
    args: Sequence[str],
    check: Callable[[Any], None] | None = None,
) -> None:
    """Compose ``config_name`` with the command line's overrides first, so that a mistake in
    one (an unknown key or file, a bad value, broken syntax) is medmtl's one line, exit 2,
    rather than Hydra's report; then ``check`` the composed config (a sweep: its first job),
    before Hydra makes the run's folder."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from medmtl.cli import fail
    from medmtl.config import compose
    from medmtl.errors import MedmtlError

    if any(a.startswith("-") and a not in HYDRA_FLAGS for a in args):
        return  # Hydra's own flags (--cfg, --config-name, ...): Hydra handles the line
    overrides = [a for a in args if a not in HYDRA_FLAGS]
    try:
        first = _first_values(overrides)
        cfg = compose(config_name, first, return_hydra_config=True) if first is not None else None
    except (HydraException, OmegaConfBaseException) as exc:
        hint = " Run with --help for the config groups and options."
        if "override_grammar" in str(exc):  # Hydra's grammar refused a value
            hint = (" A value with commas, brackets or quotes in it goes in quotes, and the whole"
                    " argument in the shell's: 'data.root=\"/data/busi, copy\"'.")  # fmt: skip
        fail(f"{hydra_message(exc)}{hint}")
    if check is not None and cfg is not None:
        if any(a in HYDRA_FLAGS for a in args):  # a sweep: the check may depend on its launcher
            from omegaconf import open_dict

            with open_dict(cfg):
                cfg.hydra.mode = "MULTIRUN"
        try:
            check(cfg)
        except MedmtlError as exc:
            fail(str(exc))
        except (HydraException, OmegaConfBaseException) as exc:  # e.g. a required key unset
            fail(f"{hydra_message(exc)} Run with --help for the config groups and options.")


def hydra_main(
    prog: str,
    doc: str,
    config_name: str,
    run: Callable[[], Any],
    settings: type | None = None,
    argv: list[str] | None = None,
    check: Callable[[Any], None] | None = None,
) -> Any:
    """Entry point of a Hydra command: ``--help`` in medmtl's layout, the overrides and then the
    composed config (``check``) checked in one line, then ``run()`` (the ``@hydra.main``
    function, which reads ``sys.argv``)."""
    from medmtl.cli import stop_on_signals, stopped
    from medmtl.errors import Stopped

    args = quote_paths(sys.argv[1:] if argv is None else list(argv))
    if argv is None:
        sys.argv[1:] = args  # what Hydra reads
    if any(a in ("-h", "--help") for a in args):
        print(hydra_usage(prog, doc, config_name, settings))
        sys.exit(0)
    check_overrides(config_name, args, check)
    try:
        with stop_on_signals():
            return run()
    except Stopped as exc:
        stopped(exc)

"""Every option of every key=value command, fed the faults of its kind: a wrong type, a value
outside its choices or range, a missing path and a path of the wrong kind. Each must be one
`medmtl: error:` line, exit 2, no traceback, nothing written. A new option is enumerated too."""

from __future__ import annotations

import importlib
import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from medmtl.cli.options import _kind
from medmtl.settings import commands as C
from tests.conftest import refused

# command -> (its settings, the positional field)
COMMANDS = {
    "predict": (C.PredictSettings, None),
    "export": (C.ExportSettings, None),
    "serve": (C.ServeSettings, None),
    "ensemble": (C.EnsembleSettings, "runs"),
    "calibrate": (C.CalibrateSettings, "runs"),
    "compare": (C.CompareSettings, None),
    "tables": (C.TablesSettings, "multirun_dir"),
    "unlike": (C.UnlikeSettings, "files"),
    "shift": (C.ShiftSettings, None),
    "adapt": (C.AdaptSettings, None),
    "rehearse": (C.RehearseSettings, None),
    **{f"bench {what}": (cls, "what") for what, (cls, _) in C.BENCHES.items()},
}
# options whose any text is valid (names, tokens, a row label, hosts...)
FREE_TEXT = {"image_column", "group_column", "auth_token", "token", "user", "archive_user", "baseline",
             "host", "select", "into", "empty_mask_class", "split", "archive",
             "busi_root", "busi_image", "match"}  # fmt: skip
# options no fault is fed to, and why
UNFAULTED = {("bench " + what, "what"): "the benchmark's name is the command word itself"
             for what in C.BENCHES}  # fmt: skip


def _valid(tmp: Path) -> dict[str, str]:
    """Paths that pass each kind of path check."""
    (tmp / "dir").mkdir(exist_ok=True)
    (tmp / "file.csv").write_text("file,unlike_score\na,1\n")
    return {"file": str(tmp / "file.csv"), "dir": str(tmp / "dir"), "any": str(tmp / "dir"),
            "out": str(tmp / "new_out"), "outfile": str(tmp / "new_file.onnx")}  # fmt: skip


def _base(cls, positional, tmp: Path) -> list[str]:
    """A command line that passes parsing: the required options with valid values."""
    valid = _valid(tmp)
    args = []
    for f in fields(cls):
        if f.default is not MISSING or f.default_factory is not MISSING:  # type: ignore[misc]
            continue
        value = valid[f.metadata.get("path", "dir")]
        if f.name == positional:
            if positional != "what":  # medmtl-bench: the measurement is the first word
                args += [value] * (2 if cls is C.UnlikeSettings else 1)
        else:
            args.append(f"{f.name}={value}")
    if positional == "what":  # a benchmark that ran by mistake never touches docs/
        args.append(f"out={tmp / 'bench.md'}")
    if cls is C.CompareSettings:  # one of ckpt_paths= or evals= is needed
        args.append(f"ckpt_paths=[{valid['file']}]")
    if cls is C.ShiftSettings:  # one of model= or ckpt_path= is needed
        args.append(f"model={valid['file']}")
    return args


def _faults(cls, tmp: Path) -> list[tuple[str, str, str]]:
    """(option, bad value, kind of fault) for every option of ``cls``."""
    out = []
    for f in fields(cls):
        kind, _ = _kind(cls, f)
        path = f.metadata.get("path")
        if path:
            if path in ("file", "dir", "any"):  # an output may not exist yet
                out.append((f.name, str(tmp / "does-not-exist"), "missing path"))
            wrong = {"file": str(tmp / "dir"), "dir": str(tmp / "file.csv"),
                     "out": str(tmp / "file.csv"), "outfile": str(tmp / "dir")}  # fmt: skip
            if path in wrong:
                out.append((f.name, wrong[path], "path of the wrong kind"))
            continue
        if kind is bool:
            out.append((f.name, "maybe", "wrong type"))
        elif kind in (int, float):
            out.append((f.name, "many", "wrong type"))
            out.append((f.name, "-7", "out of range"))
        elif kind in (str, list) and f.name not in FREE_TEXT and f.name != "what":
            bad = "no-such-choice" if kind is str else "[no-such-choice]"
            out.append((f.name, bad, "not one of the choices"))
    return out


CASES = []
for command, (cls, positional) in COMMANDS.items():
    for name, value, fault in _faults(cls, Path("/TMP")):
        CASES.append((command, cls, positional, name, value.replace("/TMP/", ""), fault))


@pytest.mark.parametrize("command", COMMANDS)
def test_the_base_command_line_alone_parses(command, tmp_path):
    """Each fault below is the only one: without it the command line is valid."""
    from medmtl.cli.options import parse

    cls, positional = COMMANDS[command]
    words = command.split()[1:]
    settings = parse([*words, *_base(cls, positional, tmp_path)], cls, positional)
    assert isinstance(settings, cls)


def test_the_enumeration_covers_every_command_and_option():
    """Every settings class of a key=value command is here, and every option of each is fed a
    fault, takes any text (FREE_TEXT) or is listed in UNFAULTED with its reason."""
    classes = {cls for cls, _ in COMMANDS.values()} | {C.PreprocessToolSettings}
    ours = {v for k, v in vars(C).items() if k.endswith("Settings") and k != "Settings"}
    assert {c for c in ours if c is not C.BenchSettings} <= classes  # a bench is one of BENCHES
    faulted = {(c, name) for c, _, _, name, _, _ in CASES}
    every = {(c, f.name) for c, (cls, _) in COMMANDS.items() for f in fields(cls)}
    unfaulted = {(c, n) for c, n in every - faulted if n not in FREE_TEXT}
    assert unfaulted == set(UNFAULTED), unfaulted ^ set(UNFAULTED)


@pytest.mark.parametrize(
    "command, cls, positional, name, value, fault",
    CASES,
    ids=[f"{c[0]}-{c[3]}-{c[5].replace(' ', '_')}" for c in CASES],
)
def test_every_fault_is_one_line_exit_2_and_nothing_written(
    command, cls, positional, name, value, fault, tmp_path, capsys
):
    value = (
        value
        if not value.startswith(("does-not-exist", "dir", "file.csv"))
        else str(tmp_path / value)
    )
    base = _base(cls, positional, tmp_path)
    if name == positional:
        base = [a for a in base if "=" in a]
        args = [value, *([value] if cls is C.UnlikeSettings else [])]
    elif cls is C.ShiftSettings and name == "ckpt_path":
        base = [a for a in base if not a.startswith("model=")]  # they exclude each other
        args = [f"{name}={value}"]
    elif cls is C.CompareSettings and name in ("evals", "data_root"):
        base = [a for a in base if not a.startswith("ckpt_paths=")]  # they exclude each other
        args = [f"{name}={value}"] + ([f"evals=[{tmp_path}]"] if name == "data_root" else [])
    else:
        base = [a for a in base if not a.startswith(f"{name}=")]
        args = [f"{name}={value}"]
    words = command.split()
    module = importlib.import_module(f"medmtl.cli.{words[0]}")
    before = sorted(p.name for p in tmp_path.iterdir())
    error = refused(lambda: module.main([*words[1:], *args, *base]), capsys)
    # the fault is named: the option as `name=` (a whole word), a positional argument by its value
    named = re.escape(value) if name == positional else rf"(?<![\w.-]){re.escape(name)}="
    assert re.search(named, error), (fault, error)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


# the Hydra commands' own settings: medmtl-eval and medmtl-preprocess check them on the composed
# config before Hydra makes the run folder (medmtl-train's and medmtl-data's groups:
# test_train_options.py)
HYDRA = {"eval": __import__("medmtl.settings.evaluation", fromlist=["x"]).EvalSettings,
         "preprocess": C.PreprocessToolSettings}  # fmt: skip
HYDRA_CASES = [
    (command, cls, name, value, fault)
    for command, cls in HYDRA.items()
    for name, value, fault in _faults(cls, Path("/TMP"))
    # nested groups (checked by their own settings) and free lists of column names
    if name not in ("conversion", "class_map", "postprocess", "conformal", "clahe", "by")
]


@pytest.mark.parametrize(
    "command, cls, name, value, fault",
    HYDRA_CASES,
    ids=[f"{c[0]}-{c[2]}-{c[4].replace(' ', '_')}" for c in HYDRA_CASES],
)
def test_hydra_command_settings_refuse_every_fault(
    command, cls, name, value, fault, tmp_path, monkeypatch, capsys
):
    import sys

    _valid(tmp_path)
    value = str(tmp_path / value.replace("/TMP/", "")) if value.startswith("/TMP/") else value
    base = (
        {"input": str(tmp_path / "dir"), "output": str(tmp_path / "o")}
        if cls is C.PreprocessToolSettings
        else {"ckpt_path": str(tmp_path / "file.csv")}
    )
    args = [f"{k}={v}" for k, v in {**base, name: value}.items()]
    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", [f"medmtl-{command}", *args, f"hydra.run.dir={run_dir}"])
    before = sorted(p.name for p in tmp_path.iterdir())
    error = refused(importlib.import_module(f"medmtl.cli.{command}").main, capsys)
    # the option by its name as a whole word (the config may say it with its group: model.)
    assert re.search(rf"(?<![\w-]){re.escape(name)}\b", error), (fault, error)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # not even Hydra's folder

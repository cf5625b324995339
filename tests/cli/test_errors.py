"""Every command reports a user mistake the same way: one ``medmtl: error:`` line, exit 2."""

from __future__ import annotations

import importlib
import sys

import pytest

from tests.conftest import refused, run_cli

CASES = [
    ("train", ["data.image_size=100"], "data.image_size=100"),
    ("eval", ["ckpt_path=/nonexistent/best.ckpt"], "/nonexistent/best.ckpt: checkpoint not found"),
    ("data", ["audit", "data.root=/nonexistent/busi"], "/nonexistent/busi: data folder not found"),
    ("data", ["inspect"], "the first argument must be one of audit, split"),
    (
        "train",
        ["data=manifest", "data.manifest=/nonexistent/list.csv"],
        "/nonexistent/list.csv: manifest not found",
    ),
    (
        "eval",
        ["ckpt_path=/nonexistent/best.ckpt", "data=busbra", "split=all"],
        "checkpoint not found",
    ),
    ("preprocess", ["input=/nonexistent/x.png", "output=/tmp/out"], "/nonexistent/x.png"),
    ("predict", ["input=/nonexistent", "out=/tmp/o", "threshold=2"], "threshold=2"),
    ("export", ["ckpt_path=/nonexistent.ckpt", "format=tflite"], "format=tflite"),
    ("compare", ["ckpt_paths=[]"], "give ckpt_paths="),
    ("ensemble", ["/nonexistent/sweep", "out=/tmp/e"], "/nonexistent/sweep: folder not found"),
    ("tables", ["/nonexistent/sweep"], "/nonexistent/sweep: multirun folder not found"),
    ("tables", ["/tmp", "--columns", "bogus"], "columns='bogus' is unknown"),
    ("tables", ["/tmp", "colums=recipe"], "unknown option 'colums'"),
    ("bench", ["nothing"], "medmtl-bench: the first argument must be one of"),
    # a mistake in a Hydra override is medmtl's one line too, before any run folder is made
    ("train", ["foo=1"], "Could not override 'foo'"),
    (
        "train",
        ["data=nothing"],
        "Could not find 'data/nothing'; Available options in 'data': busbra",
    ),
    ("train", ["data.image_size=["], "no viable alternative at input '['"),
    ("eval", ["ckpt_path=x", "spli=test"], "Could not override 'spli'"),
    ("eval", ["ckpt_path=x", "split=holdout"], "split='holdout' is unknown"),
    ("data", ["audit", "data.roo=x"], "Could not override 'data.roo'"),
    ("data", ["audit", "data=multi"], "data=multi: audit and split each data set on its own"),
    ("predict", ["input=a", "out=b", "treshold=0.4"], "unknown option 'treshold'"),
    ("predict", ["input=a", "out=b", "batch_size=many"], "batch_size=many: expected an integer"),
    ("serve", ["port=0"], "port=0: must be a port number"),
    ("serve", ["host=0.0.0.0"], "listening beyond this machine needs auth_token=<secret>"),
    ("serve", ["auth_token= "], "auth_token= is empty"),
    ("ensemble", ["/tmp", "out=/tmp/e", "gate=auto"], "gate='auto' is unknown"),
    ("calibrate", ["by_class=maybe"], "by_class=maybe: expected true or false"),
    ("export", ["format=onnx"], "missing required option(s): ckpt_path=..."),
]

COMMANDS = [
    "train", "eval", "data", "preprocess", "predict", "export", "serve", "ensemble",
    "calibrate", "compare", "tables", "bench",
]  # fmt: skip


def _main(command: str, args: list[str], monkeypatch):
    """The command's entry point as its console script calls it (``sys.argv``), in-process."""
    monkeypatch.setattr(sys, "argv", [f"medmtl-{command}", *args])
    return importlib.import_module(f"medmtl.cli.{command}").main


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_has_one_layout(command, monkeypatch, capsys):
    """--help: the usage line, the summary, then the options or config groups as key=default."""
    with pytest.raises(SystemExit) as done:
        raise SystemExit(_main(command, ["--help"], monkeypatch)())  # some return their status
    out = capsys.readouterr().out
    assert done.value.code == 0, out[-2000:]
    lines = out.splitlines()
    assert lines[0].startswith(f"usage: medmtl-{command} "), lines[:3]
    assert lines[1] == "" and lines[2] and not lines[2].startswith("medmtl-")
    headers = [ln for ln in lines if ln.endswith(":") and not ln.startswith(" ")]
    assert headers and headers[0] in ("options:", "config groups (group=<file>):"), headers
    first = lines[lines.index(headers[0]) + 1]
    assert first.startswith("  ") and "=" in first.split()[0], first


def test_gnu_style_options_are_the_same_as_key_value(tmp_path):
    from medmtl.cli.options import parse
    from medmtl.settings.commands import TablesSettings

    s = str(tmp_path)
    a = parse([s, "--no-ci", "--wandb", "--columns", "recipe"], TablesSettings, "multirun_dir")
    b = parse([s, "ci=false", "wandb=offline", "columns=recipe"], TablesSettings, "multirun_dir")
    assert a == b and a.folder == s and a.ci is False and a.wandb == "offline"
    assert parse([s, "--wandb", "online"], TablesSettings, "multirun_dir").wandb == "online"


@pytest.mark.parametrize(
    ("command", "args", "says"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_one_line_and_exit_2(command, args, says, tmp_path, monkeypatch, capsys):
    if command in ("train", "eval"):  # the run folder Hydra makes goes to the test's folder
        args = [*args, f"hydra.run.dir={tmp_path / 'run'}"]
    monkeypatch.chdir(tmp_path)
    error = refused(_main(command, args, monkeypatch), capsys)
    assert says in error, error


@pytest.mark.parametrize("case", [0, 7], ids=["train", "predict"])
def test_as_a_user_runs_it(case, tmp_path):
    """A Hydra command and a key=value one in their own process, as a user runs them: the
    same one line and exit status 2 (the cases above run in-process)."""
    command, args, says = CASES[case]
    if command == "train":
        args = [*args, f"hydra.run.dir={tmp_path / 'run'}"]
    res = run_cli(command, *args, timeout=300, cwd=tmp_path)
    assert res.returncode == 2, (res.stdout[-2000:], res.stderr[-2000:])
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("medmtl: error: ")]
    assert len(errors) == 1 and says in errors[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr

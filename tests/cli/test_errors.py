"""Every command reports a user mistake the same way: one ``medmtl: error:`` line, exit 2."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli

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
    ("tables", ["/tmp", "--columns", "bogus"], "medmtl-tables: argument --columns"),
    ("bench", ["nothing"], "medmtl-bench: argument what"),
]


@pytest.mark.parametrize(
    ("command", "args", "says"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_one_line_and_exit_2(command, args, says, tmp_path):
    if command in ("train", "eval"):  # the run folder Hydra makes goes to the test's folder
        args = [*args, f"hydra.run.dir={tmp_path / 'run'}"]
    res = run_cli(command, *args, timeout=300, cwd=tmp_path)
    assert res.returncode == 2, (res.stdout[-2000:], res.stderr[-2000:])
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("medmtl: error: ")]
    assert len(errors) == 1 and says in errors[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr

"""scripts/gpu-check: --dry runs the GPU check's own steps on the CPU at tiny sizes (so that it
cannot rot without a GPU); without a GPU and without --dry it fails in one line; a run that
fails is in the JSON and makes the exit status non-zero; the data-wait measure is right."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from types import SimpleNamespace

import pytest

from medmtl.bench import gpu
from medmtl.config import project_root
from medmtl.training.throughput import Throughput

SCRIPT = project_root() / "scripts" / "gpu-check"


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=1500,
                          env={**os.environ, **(env or {})})  # fmt: skip


# CI runs one cell; every cell (each another encoder on the same path) in test-full
DRY_CELLS = [
    pytest.param(["unet+resnet50"], id="one-cell"),
    pytest.param(None, id="every-cell", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("cells", DRY_CELLS)
def test_dry_runs_every_step_and_writes_its_json(busi, tmp_path, cells):
    out = tmp_path / "check.json"
    chosen = [f"cells=[{','.join(cells)}]"] if cells else []
    res = _run("--dry", f"json={out}", *chosen, env={"BUSI_ROOT": str(busi)})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["dry"] is True and report["torch"] and "cuda" in report
    expected = cells if cells is not None else [f"{a}+{e}" for a, e in gpu.CELLS]
    assert [c["cell"] for c in report["cells"]] == expected
    for cell in report["cells"]:
        runs = {k: v for k, v in cell.items() if isinstance(v, dict)}
        assert set(runs) == {"fp32", "mixed"}, cell
        for what, r in runs.items():
            assert "error" not in r, (cell["cell"], what, r)
            assert r["images_per_s"] > 0 and 0 <= r["data_wait_share"] <= 1, r
            assert r["steps_counted"] >= 2
        assert 0 <= runs["mixed"]["val"]["val/seg_dice"] <= 1  # the epoch was validated
        assert 0 <= runs["mixed"]["val"]["val/cls_acc"] <= 1
        assert runs["mixed"]["precision"]  # and says in which precision it trained
    assert report["ddp"] == {"skipped": "0 GPU(s): DDP needs two"}
    assert report["failures"] == []
    assert "PASSED" in res.stdout and str(out) in res.stdout


def test_cells_are_chosen_by_name():
    from medmtl.errors import ConfigError

    assert gpu.chosen_cells(None) == gpu.CELLS
    assert gpu.chosen_cells(["unet+mit_b2", "unet+resnet50"]) == (
        ("unet", "mit_b2"),
        ("unet", "resnet50"),
    )
    with pytest.raises(ConfigError, match="cells='unet\\+vgg' is unknown; choose one of"):
        gpu.chosen_cells(["unet+vgg"])


def test_without_a_gpu_it_fails_naming_the_node(tmp_path):
    out = tmp_path / "check.json"
    res = _run(f"json={out}")
    assert res.returncode == 1
    report = json.loads(out.read_text())
    assert report["error"].startswith(f"node {socket.gethostname()} has no usable GPU")
    assert "--dry" in report["error"] and "FAILED" in res.stdout
    assert report["cells"] == []  # nothing was tried


def test_a_failed_run_is_reported_with_its_reason(tmp_path):
    plan = gpu.Plan(True, tmp_path / "no-busi", tmp_path / "runs")
    result = gpu.train_run(
        plan, "unet/fp32", ["model/encoder=resnet18", "model.encoder.weights=null"]
    )
    assert "no-busi" in result["error"] and "images_per_s" not in result


@pytest.mark.parametrize("wait_s", [0.0, 0.05])
def test_throughput_counts_the_wait_between_steps(wait_s):
    """The time between a step's end and the next start is the data wait; warm-up excluded."""
    import torch

    meter = Throughput(warmup=1)
    module = SimpleNamespace(device=torch.device("cpu"))
    batch = {"image": torch.zeros(4, 1, 8, 8)}
    meter.on_train_epoch_start(None, module)
    for i in range(4):
        time.sleep(wait_s)  # the loader
        meter.on_train_batch_start(None, module, batch, i)
        time.sleep(0.02)  # the step
        meter.on_train_batch_end(None, module, None, batch, i)
    r = meter.result()
    assert r["steps_counted"] == 3 and r["images"] == 12
    share = wait_s / (wait_s + 0.02)
    assert r["data_wait_share"] == pytest.approx(share, abs=0.15)

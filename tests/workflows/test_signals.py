"""Every signal a scheduler or a user sends (SIGTERM, SIGINT, SIGHUP, SIGUSR2), mid-run: the
command stops in one line saying what it kept, exits 128 + the signal's number, and what it
finished stays on disk, whole and listed."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmtl.cli import STOP_SIGNALS
from tests.conftest import TINY_MODEL, TINY_PHANTOM

SIGNALS = [getattr(signal, name) for name in STOP_SIGNALS]
# every signal goes through one handler (medmtl.cli.stop_on_signals): CI stops each command
# with a scheduler's SIGTERM and a user's Ctrl+C; make test-full with all four
CI_SIGNALS = ("SIGTERM", "SIGINT")
SOME_SIGNALS = [
    pytest.param(getattr(signal, name), marks=[] if name in CI_SIGNALS else pytest.mark.slow)
    for name in STOP_SIGNALS
]
N_IMAGES = 300


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    """Enough images that a prediction of them is still running when the signal comes."""
    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        img = (rng.random((192, 256)) * 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i:03d}.png")
    return folder


def _start(command: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"medmtl.cli.{command}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _signal_when(proc: subprocess.Popen, ready, signum: int, timeout: float = 300) -> str:
    """Send ``signum`` once ``ready()``; the process's stderr once it ended."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"ended before the signal: {proc.communicate()[1][-2000:]}"
        assert time.time() < deadline, "never got far enough for the signal"
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return err


def _hidden(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.is_file()]


@pytest.mark.parametrize("signum", SOME_SIGNALS, ids=STOP_SIGNALS)
def test_predict_stopped_keeps_and_lists_every_finished_image(signum, many_images, tiny_ckpt,
                                                              tmp_path):  # fmt: skip
    out = tmp_path / "out"
    proc = _start("predict", f"ckpt_path={tiny_ckpt}", f"input={many_images}", f"out={out}",
                  "batch_size=1")  # fmt: skip
    err = _signal_when(proc, lambda: len(list(out.glob("*_overlay.png"))) >= 5, signum)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("medmtl: ")]
    assert lines == [lines[-1]] and lines[-1].startswith(f"medmtl: stopped by {name}; "), err
    assert "Traceback" not in err
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert 5 <= len(rows) < N_IMAGES
    assert f"keeps the {len(rows)} image(s) predicted before it" in lines[-1]
    for row in rows:  # every listed image has its outputs, whole
        assert Image.open(out / row["mask_file"]).size == (256, 192)
        assert Image.open(out / row["overlay_file"]).size == (256, 192)
    listed = list(csv.DictReader((out / "not_predicted.csv").open()))
    assert len(rows) + len(listed) == N_IMAGES  # every image is in one list or the other
    assert all("the run stopped" in r["reason"] for r in listed)
    assert f"lists the {len(listed)} other(s)" in lines[-1]
    assert _hidden(out) == []  # no temporary file left behind


@pytest.mark.parametrize("signum", SOME_SIGNALS, ids=STOP_SIGNALS)
def test_preprocess_stopped_keeps_whole_images(signum, many_images, tmp_path):
    out = tmp_path / "out"
    run = tmp_path / "run"
    proc = _start("preprocess", f"input={many_images}", f"output={out}", "compare=true",
                  f"hydra.run.dir={run}")  # fmt: skip
    err = _signal_when(proc, lambda: len(list(out.glob("*.png"))) >= 4, signum)
    assert proc.returncode == 128 + signum, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("medmtl: ")]
    name = signal.Signals(signum).name
    assert len(lines) == 1 and lines[0].startswith(f"medmtl: stopped by {name}; "), err
    written = [p for p in out.glob("img*.png") if not p.stem.endswith("_compare")]
    assert f"{len(written)} image(s) written to {out}" in lines[0]
    for p in written:
        assert Image.open(p).size == (256, 192)
    assert _hidden(out) == []


TRAIN_SIGNALS = [pytest.param(s, marks=[] if s == signal.SIGTERM else pytest.mark.slow) for s in SIGNALS]  # fmt: skip


@pytest.mark.parametrize("signum", TRAIN_SIGNALS, ids=STOP_SIGNALS)
def test_training_stopped_keeps_its_checkpoint_and_says_how_to_resume(signum, tmp_path, cache_dir):
    run = tmp_path / "run"
    env = {**os.environ, "MEDMTL_CACHE_DIR": str(cache_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "medmtl.cli.train", "experiment=demo", *TINY_PHANTOM, *TINY_MODEL,
         "trainer.max_epochs=200", "logger=csv", f"hydra.run.dir={run}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    last = run / "checkpoints" / "last.ckpt"
    err = _signal_when(proc, last.is_file, signum)
    assert proc.returncode == 128 + signum, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("medmtl: ")]
    name = signal.Signals(signum).name
    assert lines == [f"medmtl: stopped by {name}; the epochs finished before it are kept; "
                     f"resume with ckpt_path={last}"], err[-3000:]  # fmt: skip
    assert "Traceback" not in err
    from medmtl.models.checkpoint import load_checkpoint

    assert load_checkpoint(last)["epoch"] >= 0  # whole: it loads
    assert not (run / "metrics.json").exists()  # no record of a run that did not finish

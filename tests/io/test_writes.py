"""Every write goes through io.files.atomic_path: a failed write is one line naming the path and
the cause, nothing is left half-written, and what was written before stays."""

from __future__ import annotations

import csv
import io
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmtl.errors import WriteError
from medmtl.io.files import atomic_path, atomic_write_text
from tests.conftest import run_cli


@contextmanager
def small_disk(folder: Path, size: str = "64k", read_only: bool = False) -> Iterator[Path]:
    """A tiny tmpfs mounted at ``folder`` (root only; skipped with the reason elsewhere)."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (CI runs as root)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        atomic_write_text(disk / "kept.txt", "written before\n")
        with pytest.raises(WriteError, match=r"big\.txt: cannot write it: no space left"):
            atomic_write_text(disk / "big.txt", "x" * 200_000)
        assert _leftovers(disk) == ["kept.txt"]  # no hidden temporary, the earlier file kept
        assert (disk / "kept.txt").read_text() == "written before\n"


def test_a_read_only_file_system_is_one_line(tmp_path):
    with small_disk(tmp_path / "ro", read_only=True) as disk:
        with pytest.raises(WriteError, match="cannot write it: the file system is read-only"):
            atomic_write_text(disk / "a.txt", "x")
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "in.png")
        res = run_cli("preprocess", f"input={tmp_path / 'in.png'}", f"output={disk / 'o'}",
                      f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("medmtl: error: ")]
        assert res.returncode == 2 and len(errors) == 1, res.stderr[-2000:]
        assert "read-only" in errors[0].lower() and "Traceback" not in res.stderr


def test_a_long_name_and_a_folder_in_the_way_are_one_line(tmp_path):
    with pytest.raises(WriteError, match="the name is too long"):
        atomic_write_text(tmp_path / ("n" * 300 + ".csv"), "x")
    (tmp_path / "metrics.json").mkdir()
    with pytest.raises(WriteError, match="a folder is in the way"):
        atomic_write_text(tmp_path / "metrics.json", "{}")
    in_the_way = tmp_path / "metrics.json" / "x" / "y.txt"
    (tmp_path / "metrics.json" / "x").write_text("a file")
    with pytest.raises(WriteError, match="a file is in the way"), atomic_path(in_the_way) as tmp:
        tmp.write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_predict_onto_a_full_disk_stops_with_one_line_and_keeps_the_finished_rows(
    tiny_ckpt, tmp_path
):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):  # noise: overlays that do not compress, so the disk fills midway
        Image.fromarray(rng.integers(0, 255, (120, 160), np.uint8)).save(src / f"{i}.png")
    with small_disk(tmp_path / "disk", size="96k") as disk:
        res = run_cli("predict", f"ckpt_path={tiny_ckpt}", f"input={src}", f"out={disk / 'o'}",
                      "batch_size=2")  # fmt: skip
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("medmtl: error: ")]
        assert res.returncode == 2 and len(errors) == 1, res.stderr[-2000:]
        assert "no space left on the device" in errors[0] and "Traceback" not in res.stderr
        assert not [p for p in (disk / "o").rglob(".*tmp*")]  # no half-written file
        # the rows of the images finished before the disk filled are kept, whole
        text = (disk / "o" / "predictions.csv").read_text()
        rows = list(csv.DictReader(io.StringIO(text)))
        assert text.endswith("\n") and 0 < len(rows) < 8, text
        assert f"keeps the {len(rows)} image(s) predicted before it" in errors[0]
        # and an image stopped halfway keeps none of its outputs: each file has its row
        listed = sorted(r[k] for r in rows for k in ("mask_file", "overlay_file"))
        on_disk = sorted(p.name for p in (disk / "o").glob("*.png"))
        assert listed == on_disk and len(on_disk) == 2 * len(rows)


def test_training_onto_a_full_disk_is_one_line(tmp_path, cache_dir):
    """Lightning's own checkpoint write fails on a full disk: one line too, not a traceback."""
    from tests.conftest import TINY_MODEL, TINY_PHANTOM

    with small_disk(tmp_path / "disk", size="256k") as disk:
        res = run_cli("train", *TINY_PHANTOM, *TINY_MODEL, "trainer.max_epochs=1",
                      f"paths.cache_dir={cache_dir}", f"hydra.run.dir={disk / 'run'}")  # fmt: skip
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("medmtl: error: ")]
        assert res.returncode == 2 and len(errors) == 1, res.stderr[-2000:]
        assert "no space left on the device" in errors[0] and "Traceback" not in res.stderr
        assert errors[0].startswith(f"medmtl: error: {disk / 'run'}: cannot write it")

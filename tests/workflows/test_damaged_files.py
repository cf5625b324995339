"""A damaged file anywhere a command reads one: one ``medmtl: error:`` line naming the file,
exit 2, no traceback, nothing half-written. Every kind of file a command reads is enumerated
(checkpoint, ONNX model, run record, split file, manifest, teacher) and damaged in each way a
file is found damaged (cut short, emptied, overwritten with other bytes); a damaged DICOM among
other images is listed by name and the others are predicted."""

from __future__ import annotations

import csv
import importlib
import random
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import DICOM_DIR, TINY_PHANTOM, refused

DAMAGES = ("truncated", "empty", "garbage")


def damage(source: Path, target: Path, how: str) -> Path:
    """``target``: ``source`` cut to its first half, emptied, or as many random bytes."""
    raw = source.read_bytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    if how == "truncated":
        target.write_bytes(raw[: len(raw) // 2])
    elif how == "empty":
        target.write_bytes(b"")
    else:
        target.write_bytes(random.Random(0).randbytes(max(len(raw), 64)))
    return target


@pytest.fixture(scope="module")
def onnx_file(tiny_ckpt, tmp_path_factory) -> Path:
    from medmtl.inference.export import export_onnx

    return export_onnx(tiny_ckpt, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("img")
    Image.fromarray(np.tile(np.arange(96, dtype=np.uint8), (64, 1))).save(folder / "a.png")
    return folder / "a.png"


def _key_value(command: str, *args: str) -> Callable[[], None]:
    module = importlib.import_module(f"medmtl.cli.{command}")
    return lambda: module.main(list(args))


def _hydra(command: str, *args: str, run_dir: Path, monkeypatch) -> Callable[[], None]:
    argv = [f"medmtl-{command}", *args, f"hydra.run.dir={run_dir}"]
    monkeypatch.setattr(sys, "argv", argv)
    return importlib.import_module(f"medmtl.cli.{command}").main


# kind of file -> how a command reads it: (command, arguments with {f} for the damaged file)
READERS = {
    "checkpoint": [
        ("predict", ["ckpt_path={f}", "input={image}", "out={out}"]),
        ("export", ["ckpt_path={f}", "out={out}/m.onnx"]),
        ("eval", ["ckpt_path={f}"]),
        ("train", ["experiment=demo", *TINY_PHANTOM, "ckpt_path={f}"]),  # resume
    ],
    # a run folder whose checkpoints are damaged ({f}: its checkpoints folder)
    "run checkpoint": [("calibrate", ["{run}"]), ("eval", ["ckpt_path={run}"])],
    "teacher": [("train", ["experiment=demo", *TINY_PHANTOM, "distill.teacher={f}"])],
    "onnx": [
        ("predict", ["backend=onnx", "model={f}", "input={image}", "out={out}"]),
        ("serve", ["model={f}", "port=1"]),  # refused before it listens
    ],
    "record": [("eval", ["ckpt_path={run}"]), ("calibrate", ["{run}"])],
    "split": [("data", ["split", "data=busi", "data.root={busi}", "data.split_file={f}"])],
    "manifest": [("predict", ["ckpt_path={ckpt}", "input={f}", "out={out}"])],
}
HYDRA = ("train", "eval", "data")
CASES = [(kind, command, args, how) for kind, readers in READERS.items()
         for command, args in readers for how in DAMAGES]  # fmt: skip


def _damaged(kind: str, how: str, tmp: Path, tiny_run: Path, tiny_ckpt: Path, onnx_file: Path,
             image: Path, busi: Path | None) -> tuple[Path, dict[str, str]]:  # fmt: skip
    """The damaged file of ``kind`` and the other paths its command line names."""
    paths = {"image": str(image), "out": str(tmp / "out"), "ckpt": str(tiny_ckpt)}
    if kind in ("checkpoint", "teacher"):
        f = damage(tiny_ckpt, tmp / "checkpoints" / "last.ckpt", how)
    elif kind == "onnx":
        f = damage(onnx_file, tmp / "model.onnx", how)
    elif kind in ("record", "run checkpoint"):
        run = tmp / "run"
        shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("wandb"))
        paths["run"] = str(run)
        if kind == "record":
            f = damage(tiny_run / "metrics.json", run / "metrics.json", how)
        else:
            f = run / "checkpoints"
            for ckpt in f.glob("*.ckpt"):
                damage(ckpt, ckpt, how)
    elif kind == "split":
        if busi is None:
            pytest.skip("BUSI is not here")
        source = Path(__file__).resolve().parents[2] / "splits" / "busi.json"
        f = damage(source, tmp / "busi.json", how)
        paths["busi"] = str(busi)
    else:  # a manifest: one image listed, as medmtl-predict input=<list.csv> reads it
        listed = tmp / "src.csv"
        listed.write_text(f"image,label\n{image},benign\n")
        f = damage(listed, tmp / "list.csv", how)
    return f, paths


@pytest.mark.parametrize(
    "kind, command, args, how", CASES, ids=[f"{c[0]}-{c[1]}-{c[3]}" for c in CASES]
)
def test_a_damaged_file_is_one_line_naming_it(
    kind, command, args, how, tmp_path, tiny_run, tiny_ckpt, onnx_file, image, request,
    monkeypatch, capsys
):  # fmt: skip
    busi = request.getfixturevalue("busi") if kind == "split" else None
    f, paths = _damaged(kind, how, tmp_path, tiny_run, tiny_ckpt, onnx_file, image, busi)
    line = [a.format(f=f, **paths) for a in args]
    before = sorted(str(p) for p in tmp_path.rglob("*") if p.is_file())
    if command in HYDRA:
        run = _hydra(command, *line, run_dir=tmp_path / "hydra_run", monkeypatch=monkeypatch)
    else:
        run = _key_value(command, *line)
    error = refused(run, capsys)
    assert str(f) in error, error
    assert "Traceback" not in error
    after = sorted(str(p) for p in tmp_path.rglob("*") if p.is_file())
    written = [p for p in after if p not in before and "hydra_run" not in p]
    assert written == [], written  # no file written beside the inputs (an empty out/ at most)


def test_a_damaged_dicom_among_images_is_listed_and_the_others_predicted(tiny_ckpt, tmp_path,
                                                                          capsys):  # fmt: skip
    from medmtl.cli import predict

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.tile(np.arange(96, dtype=np.uint8), (64, 1))).save(src / "good.png")
    for how in DAMAGES:
        damage(DICOM_DIR / "US1_UNCR.dcm", src / f"{how}.dcm", how)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as done:
        predict.main([f"ckpt_path={tiny_ckpt}", f"input={src}", f"out={out}"])
    err = capsys.readouterr().err
    assert done.value.code == 1 and "Traceback" not in err, err[-2000:]
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [Path(r["file"]).name for r in rows] == ["good.png"]
    listed = (out / "not_predicted.csv").read_text()
    for how in DAMAGES:
        assert f"{how}.dcm" in listed and f"{how}.dcm" in err, (how, err[-2000:])

"""Prediction on new images: sizes, DICOM, CSV, TTA, Grad-CAM, ONNX parity, bad input, safety."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from medmtl.inference.core import load_for_model, predict_batch, predict_paths
from medmtl.inference.torch_backend import TorchBackend
from medmtl.metrics import entropy
from tests.conftest import DICOM_DIR, run_cli

BUSI_FILES = ["benign/benign (1).png", "malignant/malignant (10).png", "normal/normal (5).png"]


@pytest.fixture(scope="module")
def images(busi, tmp_path_factory) -> Path:
    """BUSI images of different sizes and the two ultrasound DICOM files."""
    folder = tmp_path_factory.mktemp("images")
    (folder / "dicom").mkdir()
    for rel in BUSI_FILES:
        shutil.copy(busi / rel, folder / Path(rel).name)
    for name in ("US1_UNCR.dcm", "gdcm-US-ALOKA-16.dcm"):
        shutil.copy(DICOM_DIR / name, folder / "dicom" / name)
    return folder


@pytest.fixture(scope="module")
def backend(tiny_ckpt) -> TorchBackend:
    return TorchBackend(tiny_ckpt)


def _rows(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "predictions.csv").open()))


def test_predict_masks_at_original_size_and_complete_rows(backend, images, tmp_path):
    out = tmp_path / "out"
    summary = predict_paths(backend, images, out, progress=False)
    assert not summary.failed and len(summary.rows) == 5
    # the file column holds the input path as given; outputs are named after it
    rows = {Path(r["file"]).relative_to(images).as_posix(): r for r in _rows(out)}
    assert set(rows) == {Path(r).name for r in BUSI_FILES} | {
        "dicom/US1_UNCR.dcm",
        "dicom/gdcm-US-ALOKA-16.dcm",
    }
    sizes = set()
    for rel, row in rows.items():
        src = images / rel
        stem = out / Path(rel).parent / Path(rel).stem
        mask = np.asarray(Image.open(f"{stem}_mask.png"))
        from medmtl.io import read_image

        arr, _ = read_image(src)
        assert mask.shape == arr.shape[:2]  # the original size
        sizes.add(mask.shape)
        assert int(row["lesion_area_px"]) == int((mask > 0).sum())
        probs = [float(row[f"prob_{c}"]) for c in backend.class_names]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert row["predicted_class"] == backend.class_names[int(np.argmax(probs))]
        assert float(row["entropy"]) == pytest.approx(float(entropy(np.array(probs))[0]), abs=1e-5)
        assert Path(f"{stem}_overlay.png").stat().st_size > 0
        assert row["mask_file"] == Path(f"{stem}_mask.png").relative_to(out).as_posix()
    assert len(sizes) >= 3
    # pixel spacing from the ultrasound regions gives the area in mm²
    aloka = rows["dicom/gdcm-US-ALOKA-16.dcm"]
    assert float(aloka["lesion_area_mm2"]) == pytest.approx(
        int(aloka["lesion_area_px"]) * 0.38265**2, rel=1e-3
    )
    assert rows["benign (1).png"]["lesion_area_mm2"] == ""


def test_tta_differs_and_stays_a_probability(backend, images):
    li = load_for_model(images / "benign (1).png", backend.settings)
    batch = li.model_input[None, None].astype(np.float32)
    pred = predict_batch(backend, batch)
    seg, cls = pred.seg, pred.cls
    pred = predict_batch(backend, batch, tta=True)
    seg_t, cls_t = pred.seg, pred.cls
    assert not np.allclose(cls, cls_t) and not np.allclose(seg, seg_t)
    assert cls_t.sum() == pytest.approx(1.0, abs=1e-5) and (cls_t >= 0).all()
    assert seg_t.min() >= 0 and seg_t.max() <= 1


def test_gradcam_heatmap(backend, images, tmp_path):
    from medmtl.inference.explain import GradCamExplainer

    explainer = GradCamExplainer(backend.net, 1, backend.settings.image_size)
    out = tmp_path / "cam"
    predict_paths(backend, images / "malignant (10).png", out, explainer=explainer, progress=False)
    heat = np.asarray(Image.open(out / "malignant (10)_gradcam.png"))
    original = np.asarray(Image.open(images / "malignant (10).png"))
    assert heat.shape == original.shape[:2]
    # a barely trained model may have no positive evidence for its predicted class (Grad-CAM is
    # then zero everywhere, and which class that is depends on the CPU's arithmetic): the
    # explainer must still give a map with structure for the classes that have evidence
    batch = load_for_model(images / "malignant (10).png", backend.settings).model_input
    batch = batch[None, None].astype(np.float32)
    maps = [explainer(batch, np.array([c]))[0] for c in range(len(backend.class_names))]
    assert max(float(m.std()) for m in maps) > 1e-3  # not constant for every class
    assert all(m.min() >= 0 and m.max() <= 1 for m in maps)
    overlay = np.asarray(Image.open(out / "malignant (10)_overlay.png"))
    assert overlay.shape[1] == 2 * original.shape[1]  # mask overlay | heatmap side by side


def test_onnx_parity_on_real_images(backend, tiny_ckpt, images, tmp_path):
    from medmtl.inference.export import export_onnx
    from medmtl.inference.onnx_backend import OnnxBackend

    model = export_onnx(tiny_ckpt, tmp_path / "m.onnx")
    onnx_backend = OnnxBackend(model)
    assert (
        onnx_backend.settings == backend.settings
        and onnx_backend.class_names == backend.class_names
    )
    # the metadata holds the preprocessing object as it is, and nothing of duplicate search
    assert onnx_backend.meta["preprocess"] == backend.settings.to_dict()
    assert "thumb_size" not in str(onnx_backend.meta)
    batch = np.stack(
        [load_for_model(images / Path(r).name, backend.settings).model_input for r in BUSI_FILES]
    )[:, None].astype(np.float32)  # batch of 3: the batch size is dynamic
    pred = predict_batch(backend, batch)
    seg_t, cls_t = pred.seg, pred.cls
    pred = predict_batch(onnx_backend, batch)
    seg_o, cls_o = pred.seg, pred.cls
    assert np.abs(cls_t - cls_o).max() <= 1e-4
    assert np.abs(seg_t - seg_o).max() <= 1e-4


def test_empty_mask_gate_in_torch_and_onnx(backend, tiny_ckpt, images, tmp_path):
    """A gated checkpoint empties the masks of images classified as the gated class, also
    after ONNX export; other images keep the raw model's masks."""
    from medmtl.inference.export import export_onnx
    from medmtl.inference.onnx_backend import OnnxBackend

    batch = np.stack(
        [load_for_model(images / Path(r).name, backend.settings).model_input for r in BUSI_FILES]
    )[:, None].astype(np.float32)
    pred = predict_batch(backend, batch)
    seg_raw, cls_raw = pred.seg, pred.cls
    idx = int(cls_raw[0].argmax())
    ckpt = torch.load(tiny_ckpt, weights_only=True, map_location="cpu")
    ckpt["hyper_parameters"]["model"]["empty_mask_class"] = backend.class_names[idx]
    torch.save(ckpt, tmp_path / "gated.ckpt")
    gated = TorchBackend(tmp_path / "gated.ckpt")
    onnx_backend = OnnxBackend(export_onnx(tmp_path / "gated.ckpt", tmp_path / "gated.onnx"))
    pred = predict_batch(gated, batch)
    seg_t, cls_t = pred.seg, pred.cls
    pred = predict_batch(onnx_backend, batch)
    seg_o, cls_o = pred.seg, pred.cls
    hit = cls_raw.argmax(axis=1) == idx
    assert hit[0]
    assert seg_t[hit].max() < 1e-6 and seg_o[hit].max() < 1e-6
    assert np.abs(seg_t[~hit] - seg_raw[~hit]).max(initial=0) <= 1e-5
    assert np.abs(seg_t - seg_o).max() <= 1e-4 and np.abs(cls_t - cls_o).max() <= 1e-4


def test_bad_input_folder(tiny_ckpt, busi, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(busi / BUSI_FILES[0], inp / "good.png")
    (inp / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (inp / "readme.txt").write_text("hello")
    ds = pydicom.dcmread(DICOM_DIR / "CT_small.dcm")
    del ds.PixelData
    ds.save_as(inp / "nopixels.dcm")
    out = tmp_path / "out"
    res = run_cli("predict", f"ckpt_path={tiny_ckpt}", f"input={inp}", f"out={out}")
    assert res.returncode == 1
    assert (
        "1 image(s) predicted" in res.stdout
        and "2 failed" in res.stdout
        and "1 skipped" in res.stdout
    )
    assert "corrupt.png" in res.stderr and "without pixel data" in res.stderr
    assert [r["file"] for r in _rows(out)] == [str(inp / "good.png")]
    listed = (out / "not_predicted.csv").read_text()
    assert "corrupt.png" in listed and "nopixels.dcm" in listed and "readme.txt" in listed


def test_not_a_medmtl_checkpoint_or_onnx_and_empty_folder(tmp_path):
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, other)
    (tmp_path / "empty").mkdir()
    res = run_cli(
        "predict", f"ckpt_path={other}", f"input={tmp_path / 'empty'}", f"out={tmp_path / 'o'}"
    )
    assert res.returncode == 2 and "not from medmtl-train" in res.stderr
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["y"])],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    res = run_cli(
        "predict",
        f"model={tmp_path / 'other.onnx'}",
        f"input={tmp_path / 'empty'}",
        f"out={tmp_path / 'o'}",
    )
    assert res.returncode == 2 and "not one exported by medmtl-export" in res.stderr


def test_empty_folder_and_output_inside_input(tiny_ckpt, tmp_path, busi):
    (tmp_path / "empty").mkdir()
    res = run_cli(
        "predict", f"ckpt_path={tiny_ckpt}", f"input={tmp_path / 'empty'}", f"out={tmp_path / 'o'}"
    )
    assert res.returncode == 2 and "no image files to predict" in res.stderr
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(busi / BUSI_FILES[0], inp / "x.png")
    res = run_cli("predict", f"ckpt_path={tiny_ckpt}", f"input={inp}", f"out={inp / 'pred'}")
    assert res.returncode == 2 and "inputs are never overwritten" in res.stderr
    assert f"out={inp / 'pred'} is the input folder" in res.stderr  # predict's option name
    assert sorted(p.name for p in inp.iterdir()) == ["x.png"]


def test_every_input_gets_its_own_outputs(backend, busi, tmp_path):
    """Same stem with two extensions, Unicode names and shell characters: no clash, no rename."""
    inp = tmp_path / "in"
    inp.mkdir()
    src = busi / BUSI_FILES[0]
    for name in ("dup.png", "日本.png", "中国.png", "a b$c;rm.png"):
        shutil.copy(src, inp / name)
    shutil.copy(DICOM_DIR / "US1_UNCR.dcm", inp / "dup.dcm")
    out = tmp_path / "out"
    summary = predict_paths(backend, inp, out, progress=False)
    rows = _rows(out)
    assert not summary.failed and len(rows) == 5
    assert {r["file"] for r in rows} == {str(p) for p in inp.iterdir()}
    masks = [r["mask_file"] for r in rows]
    assert len(set(masks)) == 5 and all((out / m).is_file() for m in masks)
    # the first of dup.dcm / dup.png (sorted) keeps the plain name, the other keeps its extension
    assert {"dup_mask.png", "dup.png_mask.png", "日本_mask.png", "中国_mask.png"} <= set(masks)
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))


def test_links_huge_images_and_faults_cost_only_their_own_image(backend, busi, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(busi / BUSI_FILES[1], outside / "target.png")
    inp = tmp_path / "in"
    inp.mkdir()
    for k in range(3):
        shutil.copy(busi / BUSI_FILES[0], inp / f"good{k}.png")
    (inp / "link.png").symlink_to(outside / "target.png")  # points outside the input folder
    (inp / "gone.png").symlink_to(tmp_path / "missing.png")
    from tests.data.test_bad_input import _png_header_only

    _png_header_only(inp / "huge.png", 20000, 20000)
    out = tmp_path / "out"
    summary = predict_paths(backend, inp, out, batch_size=2, progress=False)
    got = {Path(r["file"]).name for r in _rows(out)}
    assert got == {"good0.png", "good1.png", "good2.png", "link.png"}
    listed = (out / "not_predicted.csv").read_text()
    assert "huge.png" in listed and "20000 x 20000" in listed
    assert "gone.png" in listed and "broken symbolic link" in listed
    assert len(summary.failed) == 1 and len(summary.skipped) == 1

    class Flaky:  # a backend that fails on one batch: the batch is retried image by image
        settings, class_names, task = backend.settings, backend.class_names, backend.task
        calls = 0

        def run(self, batch):
            Flaky.calls += 1
            if len(batch) > 1 or Flaky.calls == 3:
                raise RuntimeError("out of memory (simulated)")
            return backend.run(batch)

    out2 = tmp_path / "out2"
    summary = predict_paths(Flaky(), inp, out2, batch_size=2, progress=False)
    assert len(_rows(out2)) == 3 and len(summary.failed) == 2  # huge.png + the one fault
    assert "out of memory (simulated)" in (out2 / "not_predicted.csv").read_text()

    class Broken(Flaky):  # a fault that is not about one image stops the run, CSVs written
        def run(self, batch):
            raise KeyboardInterrupt

    out3 = tmp_path / "out3"
    with pytest.raises(KeyboardInterrupt):
        predict_paths(Broken(), inp, out3, batch_size=2, progress=False)
    assert (out3 / "predictions.csv").read_text().startswith("file,")
    listed = (out3 / "not_predicted.csv").read_text()
    for name in ("good0.png", "good1.png", "good2.png", "huge.png", "link.png", "gone.png"):
        assert name in listed  # every input that has no prediction is listed, with a reason
    assert "the run stopped (KeyboardInterrupt)" in listed


@pytest.mark.parametrize(
    "option,message",
    [
        ("batch_size=-1", "batch_size=-1: must be 1 or more"),
        ("batch_size=0", "batch_size=0: must be 1 or more"),
        ("threshold=1.5", "threshold=1.5: must be between 0 and 1"),
        ("threshold=-0.1", "threshold=-0.1: must be between 0 and 1"),
        ("adapt=tent", "adapt=tent is unknown; choose none or bn"),
    ],
)
def test_invalid_options_are_refused_before_anything_runs(option, message, busi, tmp_path):
    # the checkpoint does not exist: the option is refused before the model is looked at
    res = run_cli(
        "predict",
        f"ckpt_path={tmp_path / 'none.ckpt'}",
        f"input={busi / BUSI_FILES[0]}",
        f"out={tmp_path / 'o'}",
        option,
    )
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()


def test_unusable_out_folder_is_one_line(busi, tmp_path):
    import os

    a_file = tmp_path / "taken.txt"
    a_file.write_text("x")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    # root writes into a mode-500 folder anyway; /sys is read-only for everyone
    read_only = ro / "pred" if os.geteuid() != 0 else Path("/sys/medmtl-readonly-test")
    for out, message in (
        (a_file, "is an existing file"),
        (a_file / "sub", "cannot write there"),
        (read_only, "cannot write there"),
    ):
        res = run_cli(
            "predict",
            f"ckpt_path={tmp_path / 'none.ckpt'}",
            f"input={busi / BUSI_FILES[0]}",
            f"out={out}",
        )
        assert res.returncode == 2, res.stderr
        assert message in res.stderr and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_onnx_backend_needs_no_torch_lightning_or_hydra(tiny_ckpt, busi, tmp_path):
    from medmtl.inference.export import export_onnx

    model = export_onnx(tiny_ckpt, tmp_path / "m.onnx")
    code = (
        "import sys; from medmtl.cli.predict import _run; "
        f"rc = _run(['model={model}', 'input={busi / BUSI_FILES[0]}', 'out={tmp_path / 'o'}']); "
        "bad = [m for m in ('torch', 'lightning', 'hydra') if m in sys.modules]; "
        "print('RC', rc, 'IMPORTED', bad)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "RC 0 IMPORTED []" in res.stdout, res.stdout + res.stderr


def test_export_cli_and_compare_cli(tiny_ckpt, tiny_run, busi, tmp_path, make_cfg):
    res = run_cli("export", f"ckpt_path={tiny_ckpt}", f"out={tmp_path / 'e.onnx'}")
    assert res.returncode == 0 and (tmp_path / "e.onnx").stat().st_size > 10_000
    res = run_cli("export", f"ckpt_path={tiny_ckpt}", "format=tflite")
    assert res.returncode == 2 and "format=tflite is not supported" in res.stderr
    # a second, single-task model on the same data for the side-by-side comparison
    from medmtl.workflows.train import train
    from tests.conftest import TINY_MODEL, TINY_PHANTOM

    train(
        make_cfg(TINY_PHANTOM + TINY_MODEL + ["trainer.max_epochs=1", "model.task=seg"], name="stl")
    )
    stl = next((tmp_path / "stl" / "checkpoints").glob("epoch*.ckpt"))
    fig = tmp_path / "cmp.png"
    res = run_cli("compare", f"ckpt_paths=[{stl},{tiny_ckpt}]", "split=test", "n=4", f"out={fig}")
    assert res.returncode == 0, res.stderr
    with Image.open(fig) as im:
        assert im.size[0] > im.size[1] / 2 and fig.stat().st_size > 20_000


def test_evaluation_figures_written(tiny_run):
    figures = tiny_run / "figures"
    for name in (
        "test_confusion_matrix",
        "test_roc",
        "test_reliability",
        "test_cases",
        "training_curves",
    ):
        path = figures / f"{name}.png"
        assert path.exists() and path.stat().st_size > 5_000, name


def test_predict_the_images_a_manifest_lists_and_keep_its_columns(tiny_ckpt, tmp_path):
    import csv

    from medmtl.data.phantom import ensure_phantom

    src = ensure_phantom(
        tmp_path / "gen", seed=5, counts={"normal": 2, "benign": 2, "malignant": 2}, size=64
    )
    listing = tmp_path / "site" / "list.csv"
    listing.parent.mkdir()
    rows = [
        {
            "path": f"../gen/phantom/{src.name}/benign/benign (1).png",
            "diagnosis": "benign",
            "patient": "P1",
        },
        {
            "path": f"../gen/phantom/{src.name}/malignant/malignant (2).png",
            "diagnosis": "malignant",
            "patient": "P2",
        },
        {"path": "missing.png", "diagnosis": "benign", "patient": "P3"},
    ]
    with listing.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "out"
    res = run_cli(
        "predict",
        f"ckpt_path={tiny_ckpt}",
        f"input={listing}",
        f"out={out}",
        "image_column=path",
        timeout=300,
    )
    # a listed file is missing: it is listed, the others go on, and the exit status says so
    assert res.returncode == 1, res.stderr[-2000:]
    got = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["diagnosis"] for r in got] == ["benign", "malignant"]
    assert [r["patient"] for r in got] == ["P1", "P2"] and all(r["predicted_class"] for r in got)
    assert (out / got[0]["mask_file"]).exists()
    missing = list(csv.DictReader((out / "not_predicted.csv").open()))
    assert len(missing) == 1 and missing[0]["file"].endswith("missing.png")
    assert missing[0]["reason"] == "file not found"


def test_adapt_bn_predicts_a_folder_with_its_own_statistics(tiny_ckpt, images, tmp_path):
    """adapt=bn: the batch-norm statistics of the folder's images, then the same outputs."""
    from medmtl.settings.commands import PredictSettings
    from medmtl.workflows.predict import predict

    folder = tmp_path / "in"
    folder.mkdir()
    for f in sorted(images.glob("*.png")):
        shutil.copy(f, folder / f.name)
    rows = {}
    for adapt in ("none", "bn"):
        out = tmp_path / adapt
        predict(PredictSettings(ckpt_path=str(tiny_ckpt), input=str(folder), out=str(out),
                                adapt=adapt))  # fmt: skip
        rows[adapt] = _rows(out)
        assert len(rows[adapt]) == 3
    probs = {a: [[float(r[k]) for k in r if k.startswith("prob_")] for r in rows[a]] for a in rows}
    assert not np.allclose(probs["none"], probs["bn"], atol=1e-4)  # the statistics changed
    res = run_cli("predict", "backend=onnx", f"model={tmp_path / 'm.onnx'}", f"input={folder}",
               f"out={tmp_path / 'o'}", "adapt=bn")  # fmt: skip
    assert res.returncode == 2 and "adapt=bn re-estimates" in res.stderr
    assert not (tmp_path / "o").exists()

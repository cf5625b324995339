"""The shift test end to end: fitted after training, stored in the checkpoint and the export,
``medmtl-shift``, ``medmtl-predict``'s summary, ``medmtl-eval``'s random batches, the API.

The tiny model learned from the phantom; real BUSI scans are another distribution for it
(the known answer: shifted), and its own test images are not (its false alarms)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from medmtl.cli.predict import _run as predict_cli
from medmtl.cli.shift import _run as shift_cli
from medmtl.cli.shift import main as shift_main
from medmtl.models.shift import shift_test
from tests.conftest import refused


def test_a_trained_model_carries_its_reference_into_the_export(
    tiny_run, tiny_ckpt, onnx_model, busi_folder
):
    from medmtl.inference.onnx_backend import OnnxBackend
    from medmtl.inference.torch_backend import TorchBackend
    from medmtl.workflows.shift import image_features

    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["shift/num_reference"] >= 2 and metrics["shift/dims"] >= 1
    torch_b, onnx_b = TorchBackend(tiny_ckpt), OnnxBackend(onnx_model)
    assert "features" in onnx_b.outputs
    [t_ref], [o_ref] = torch_b.shift_references, onnx_b.shift_references
    assert t_ref.size == metrics["shift/num_reference"]
    np.testing.assert_allclose(o_ref.sample, t_ref.sample, rtol=1e-5, atol=1e-6)
    assert onnx_b.card["shift"] == torch_b.card["shift"] and torch_b.card["shift"]["fitted"]
    files = sorted(busi_folder.iterdir())
    (ft, thumbs), (fo, _) = image_features(torch_b, files), image_features(onnx_b, files)
    assert ft.shape == (12, 1, t_ref.mean.shape[0]) and len(thumbs) == 12
    np.testing.assert_allclose(fo, ft, rtol=1e-3, atol=1e-4)
    a, b = shift_test([t_ref], ft), shift_test([o_ref], fo)
    assert a.shifted and b.shifted  # BUSI scans, for a model of the phantom
    assert b.mmd2 == pytest.approx(a.mmd2, rel=1e-3)


def test_medmtl_shift_on_a_folder_and_a_list(onnx_model, tiny_run, busi_folder, tmp_path, capsys):
    out = tmp_path / "shift.json"
    rc = shift_cli([f"model={onnx_model}", f"input={busi_folder}", f"out={out}"])
    printed = capsys.readouterr().out
    assert rc == 0 and (
        "shift test of 12 image(s) (11 distinct: near copies count once): unlike the training "
        "distribution" in printed
    )
    saved = json.loads(out.read_text())
    assert saved["shifted"] is True and saved["p_value"] < 0.01
    assert (saved["images"], saved["distinct"]) == (12, 11)
    assert saved["input"] == str(busi_folder) and saved["left_out"] == []
    # the same through PyTorch from the run folder, and from a list of the images
    listing = tmp_path / "list.csv"
    with listing.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "note", "patient"])
        for k, f in enumerate(sorted(busi_folder.iterdir())):
            w.writerow([f.resolve(), "x", "p0" if k < 3 else f"p{k}"])  # benign 1-3: one patient
    rc = shift_cli([f"ckpt_path={tiny_run}", f"input={listing}", "image_column=path"])
    assert rc == 0 and "shift test of 12 image(s) (11 distinct" in capsys.readouterr().out
    # the images of one patient count once too
    rc = shift_cli([f"model={onnx_model}", f"input={listing}", "image_column=path",
                    "group_column=patient", f"out={out}"])  # fmt: skip
    assert rc == 0 and "shift test of 12 image(s) (9 distinct" in capsys.readouterr().out
    assert json.loads(out.read_text())["distinct"] == 9
    # a note among the images is listed as left out, not tested
    (busi_folder / "notes.txt").write_text("x")
    try:
        rc = shift_cli([f"model={onnx_model}", f"input={busi_folder}"])
        printed = capsys.readouterr().out
        assert rc == 0 and "shift test of 12 image(s)" in printed and "skipped" in printed
        assert "notes.txt" in printed
    finally:
        (busi_folder / "notes.txt").unlink()


def test_near_copies_in_the_input_count_once(onnx_model, busi_folder, tmp_path, capsys):
    """The same scan three more times (a copy, a re-encoded JPEG, a re-crop) is tested as
    one image: the reason is written beside the result, and too few distinct images for
    medmtl-predict's summary means no test."""
    import cv2

    folder = tmp_path / "copies"
    shutil.copytree(busi_folder, folder)
    first = folder / "benign_1.png"
    shutil.copy(first, folder / "benign_1_copy.png")
    grey = cv2.imread(str(first), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(folder / "benign_1_jpeg.jpg"), grey, [cv2.IMWRITE_JPEG_QUALITY, 80])
    cv2.imwrite(str(folder / "benign_1_crop.png"), grey[4:-4, 4:-4])
    out = tmp_path / "shift.json"
    assert shift_cli([f"model={onnx_model}", f"input={folder}", f"out={out}"]) == 0
    assert "shift test of 15 image(s) (11 distinct: near copies count once)" in (
        capsys.readouterr().out
    )
    saved = json.loads(out.read_text())
    assert (saved["images"], saved["distinct"]) == (15, 11)
    # 11 files, 8 distinct: fewer than the 10 medmtl-predict's summary needs
    for f in ("malignant_1.png", "malignant_2.png", "malignant_3.png", "normal_4.png"):
        (folder / f).unlink()
    rc = predict_cli([f"model={onnx_model}", f"input={folder}", f"out={tmp_path / 'pred'}"])
    assert rc == 0 and "shift test" not in capsys.readouterr().out
    assert (tmp_path / "pred" / "predictions.csv").exists()
    assert not (tmp_path / "pred" / "shift.json").exists()


def test_medmtl_shift_refusals(onnx_model, tiny_ckpt, busi_folder, tmp_path, capsys):
    def refusal(args: list[str]) -> str:
        return refused(lambda: shift_main(args), capsys)

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(next(busi_folder.iterdir()), one / "a.png")
    assert "the shift test needs 2 or more" in refusal([f"model={onnx_model}", f"input={one}"])
    listing = tmp_path / "missing.csv"
    listing.write_text("image\nnot_there.png\n")
    assert "not_there.png" in refusal([f"model={onnx_model}", f"input={listing}"])
    assert "groups come from a list.csv" in refusal(
        [f"model={onnx_model}", f"input={busi_folder}", "group_column=patient"]
    )
    assert "give the model once" in refusal(
        [f"model={onnx_model}", f"ckpt_path={tiny_ckpt}", f"input={busi_folder}"]
    )
    # a checkpoint from before the reference existed: say how to fit one
    from medmtl.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tiny_ckpt)
    ckpt["state_dict"] = {
        k: v for k, v in ckpt["state_dict"].items() if not k.startswith("net.shift_")
    }
    import torch

    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    assert "medmtl-calibrate" in refusal([f"ckpt_path={old}", f"input={busi_folder}"])


def test_predict_tests_its_inputs_together(onnx_model, busi_folder, tmp_path, capsys):
    out = tmp_path / "pred"
    rc = predict_cli([f"model={onnx_model}", f"input={busi_folder}", f"out={out}"])
    printed = capsys.readouterr().out
    assert rc == 0 and "unlike the training distribution (p < 0.01); p = " in printed
    assert json.loads((out / "shift.json").read_text())["images"] == 12
    few = tmp_path / "few"
    few.mkdir()
    for f in sorted(busi_folder.iterdir())[:3]:
        shutil.copy(f, few / f.name)
    rc = predict_cli([f"model={onnx_model}", f"input={few}", f"out={tmp_path / 'p3'}"])
    assert rc == 0 and "shift test" not in capsys.readouterr().out
    assert not (tmp_path / "p3" / "shift.json").exists()  # 3 images: too few to test


def test_predict_with_adabn_runs_no_shift_test(tiny_ckpt, busi_folder, tmp_path, capsys):
    """adapt=bn re-estimates the network's statistics on these very images: its features no
    longer answer "like the reference?", so no shift test is run."""
    out = tmp_path / "bn"
    rc = predict_cli([f"ckpt_path={tiny_ckpt}", f"input={busi_folder}", f"out={out}", "adapt=bn"])
    assert rc == 0 and "shift test" not in capsys.readouterr().out
    assert (out / "predictions.csv").exists() and not (out / "shift.json").exists()


def test_eval_measures_random_batches(tiny_run, tiny_ckpt, make_cfg):
    """Random batches of the model's own test images are rarely flagged; the whole split is
    tested too."""
    from medmtl.workflows.evaluate import evaluate

    cfg = make_cfg(
        [f"ckpt_path={tiny_ckpt}", "shift.batches=[4]", "shift.repeats=10", "figures=false"],
        name="eval_shift",
        config_name="eval",
    )
    metrics = evaluate(cfg)
    assert metrics["shift/images"] == metrics["num_images"]
    assert 2 <= metrics["shift/distinct"] <= metrics["shift/images"]
    assert 2 <= metrics["shift/distinct_4"] <= 4
    assert 0 <= metrics["shift/p_value"] <= 1 and metrics["shift/repeats"] == 10
    assert metrics["shift/flagged_4"] <= 0.3  # its own distribution: about alpha = 1 %
    low, high = metrics["shift/flagged_4_ci"]
    assert low <= metrics["shift/flagged_4"] <= high
    assert "shift/p_value" not in evaluate(
        make_cfg(
            [f"ckpt_path={tiny_ckpt}", "figures=false"], name="eval_noshift", config_name="eval"
        )
    )


def test_the_api_tests_the_recent_uploads(tiny_ckpt, busi_folder):
    from medmtl.workflows.serve import ServeSettings, create_app

    client = TestClient(create_app(ServeSettings(model=str(tiny_ckpt))))
    files = sorted(busi_folder.iterdir())
    for f in files[:9]:
        r = client.post("/api/predict", files={"file": (f.name, f.read_bytes(), "image/png")})
        assert r.status_code == 200
    report = client.get("/api/shift").json()
    assert report["images"] == 9 and report["result"] is None
    assert "8 of the 10 distinct images" in report["text"]  # malignant (3) and (4): one
    again = files[0]  # the same scan uploaded twice counts once
    client.post("/api/predict", files={"file": (again.name, again.read_bytes(), "image/png")})
    report = client.get("/api/shift").json()
    assert (report["images"], report["distinct"], report["result"]) == (10, 8, None)
    assert "(10 uploads: near copies count once)" in report["text"]
    client.delete("/api/shift")
    called = {}
    for f in files:
        r = client.post("/api/predict", files={"file": (f.name, f.read_bytes(), "image/png")})
        called[f.name] = r.json()["predicted_class"]
    report = client.get("/api/shift").json()
    assert report["images"] == 12 and report["result"]["shifted"] is True
    # the same window in the order in which to label it: each upload once, near copies last
    order = client.get("/api/label_order").json()
    assert order["images"] == 12 and [r["rank"] for r in order["order"]] == list(range(1, 13))
    assert sorted(r["file"] for r in order["order"]) == sorted(f.name for f in files)
    assert order["order"][-1]["near_copy_of"] in ("malignant_3.png", "malignant_4.png")
    assert {r["file"]: r["predicted_class"] for r in order["order"]} == called
    assert max(r["informativeness"] for r in order["order"]) == order["order"][0]["informativeness"]
    assert report["text"].startswith("Recent uploads: shift test of 12 image(s)")
    cleared = client.delete("/api/shift").json()
    assert cleared["images"] == 0 and cleared["result"] is None
    assert client.get("/api/label_order").json() == {"images": 0, "order": []}
    assert client.get("/api/model").json()["shift"]["fitted"] is True

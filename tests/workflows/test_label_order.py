"""The order in which to label a new site's images: known answers on constructed doubt and
features, and ``medmtl-predict label_order=true`` on real BUSI scans."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from medmtl.cli.predict import _run as predict_cli
from medmtl.cli.predict import main as predict_main
from medmtl.models.shift import ShiftReference
from medmtl.workflows.label_order import informativeness, label_order
from tests.conftest import refused


def _rows(doubt: list[float]) -> list[dict]:
    return [{"file": f"im{k}.png", "entropy": d} for k, d in enumerate(doubt)]


def test_the_most_doubtful_first_then_the_unlike_and_near_copies_last():
    """Two clusters of features: the most doubtful image comes first, then the other
    cluster's (though less doubtful than the rest of the first), then the rest; an image in
    one near-copy group with an image already chosen comes after every other image."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 8)), rng.normal(size=(3, 8)) + 20
    features = np.concatenate([a, b, a[:1] + 1e-3])
    doubt = [0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1, 0.95]
    groups = [0, 1, 2, 3, 4, 5, 6, 0]  # the last image is a near copy of the first
    order = label_order(_rows(doubt), features, groups)
    files = [r["file"] for r in order]
    assert files[0] == "im7.png" and order[0]["distance"] == ""  # the most doubtful
    assert files[1] == "im4.png"  # the other cluster's most doubtful
    assert files[-1] == "im0.png" and order[-1]["near_copy_of"] == "im7.png"
    assert [r["rank"] for r in order] == list(range(1, 9))
    assert sorted(files) == sorted(r["file"] for r in _rows(doubt))
    assert all(r["near_copy_of"] == "" for r in order[:-1])


def test_the_predicted_classes_take_turns():
    """Six images called benign that the model doubts more than the two called malignant and
    the one called normal: ranked by doubt alone the benign would all come first; balanced,
    the classes take turns while each has images left (the most doubtful of each first), then
    the benign that are left, by doubt and distance."""
    rng = np.random.default_rng(2)
    features = rng.normal(size=(9, 8))
    called = ["benign"] * 6 + ["malignant"] * 2 + ["normal"]
    doubt = [0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.3, 0.2, 0.1]
    rows = [{**r, "predicted_class": c} for r, c in zip(_rows(doubt), called, strict=True)]
    order = label_order(rows, features, list(range(9)))
    said = [r["predicted_class"] for r in order]
    assert order[0]["file"] == "im0.png"  # the most doubtful of all
    assert set(said[:3]) == {"benign", "malignant", "normal"}
    assert set(said[3:5]) == {"benign", "malignant"}
    assert said[5:] == ["benign"] * 4
    assert [r["file"] for r in order if r["predicted_class"] == "malignant"][0] == "im6.png"
    assert sorted(r["file"] for r in order) == sorted(r["file"] for r in rows)
    # without predicted classes (a model that only segments) nothing is balanced
    plain = label_order(_rows(doubt[:6]), features[:6], list(range(6)))
    assert {r["predicted_class"] for r in plain} == {""}


def test_doubt_is_the_mean_of_what_the_model_gives():
    assert informativeness({"entropy": 0.4}) == pytest.approx(0.4)
    both = {"entropy": 0.4, "class_disagreement": 0.2, "mask_agreement": 0.4}
    assert informativeness(both) == pytest.approx((0.4 + 0.2 + 0.6) / 3)
    assert informativeness({"entropy": ""}) == 0.0
    # with a shift reference, distances are in its whitened projection; the order is complete
    rng = np.random.default_rng(1)
    ref = ShiftReference.fit(rng.normal(size=(50, 8)), rng.normal(size=(10, 8)), 4)
    order = label_order(_rows([0.1] * 5), rng.normal(size=(5, 8)), list(range(5)), [ref])
    assert sorted(r["rank"] for r in order) == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="5 rows, 4 features"):
        label_order(_rows([0.1] * 5), rng.normal(size=(4, 8)), list(range(5)))


def test_predict_writes_the_order_to_label_in(onnx_model, busi_folder, tmp_path, capsys):
    """12 BUSI scans: every predicted image once, in ranks 1-12, most informative first;
    malignant (3) and (4) are near copies, so one of them comes last."""
    out = tmp_path / "pred"
    rc = predict_cli([f"model={onnx_model}", f"input={busi_folder}", f"out={out}",
                      "label_order=true"])  # fmt: skip
    assert rc == 0 and "the order in which to label them" in capsys.readouterr().out
    with (out / "label_order.csv").open() as fh:
        order = list(csv.DictReader(fh))
    with (out / "predictions.csv").open() as fh:
        predicted = {r["file"]: r["predicted_class"] for r in csv.DictReader(fh)}
    assert [int(r["rank"]) for r in order] == list(range(1, 13))
    assert {r["file"] for r in order} == set(predicted) and len(predicted) == 12
    assert all(r["predicted_class"] == predicted[r["file"]] for r in order)
    doubt = [float(r["informativeness"]) for r in order]
    assert doubt[0] == max(doubt)
    assert order[-1]["near_copy_of"] != "" and "malignant" in order[-1]["file"]
    says = refused(
        lambda: predict_main([f"model={onnx_model}", f"input={busi_folder}",
                             f"out={tmp_path / 'bn'}", "label_order=true", "adapt=bn"]),
        capsys,
    )  # fmt: skip
    assert "run it without adapt=bn" in says

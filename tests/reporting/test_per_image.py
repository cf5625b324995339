"""predictions_<split>.csv: one row per image, and every metric of metrics.json recomputed from it."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from medmtl.metrics import entropy
from medmtl.reporting.per_image import (
    PerImage,
    average_runs,
    compute_metrics,
    metrics_dict,
    read_predictions,
    write_predictions,
)


def _close(a, b, tol=1e-6) -> bool:
    if a is None or b is None:
        return a is None and b is None or (isinstance(a, float) and math.isnan(a)) or b is None
    if isinstance(a, list):
        return np.allclose(np.asarray(a, float), np.asarray(b, float), atol=tol)
    return abs(float(a) - float(b)) <= tol


def test_train_writes_predictions_that_recompute_metrics_json(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    path = tiny_run / "predictions_test.csv"
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == len(set(r["id"] for r in rows)) > 0
    assert rows[0]["dataset"] == "phantom" and rows[0]["split"] == "test"
    assert {"pred_class", "prob_normal", "dice", "iou", "gt_pixels", "pred_pixels"} <= set(rows[0])
    # lesions found and invented, per image: a normal image has none to find
    assert {"lesions", "lesions_found", "fp_components", "lesions_small"} <= set(rows[0])
    assert all(float(r["lesions"]) == 0 for r in rows if r["true_class"] == "normal")
    assert sum(float(r["lesions"]) for r in rows) >= sum(r["true_class"] != "normal" for r in rows)
    assert "test/lesion_sensitivity" in metrics and "test/fp_per_image" in metrics
    classes = [k.removeprefix("prob_") for k in rows[0] if k.startswith("prob_")]
    prob = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])
    np.testing.assert_allclose([float(r["entropy"]) for r in rows], entropy(prob), atol=1e-9)
    # ids are paths relative to the data root, e.g. benign/benign_0003.png
    assert all(r["id"].split("/")[0] == r["true_class"] for r in rows)
    recomputed = metrics_dict(read_predictions(path), "test")
    keys = [k for k in metrics if k.startswith("test/")]
    assert len(keys) > 20
    for key in keys:
        assert key in recomputed, key
        tol = 1e-4 if key.endswith(("auc", "ece")) else 1e-6
        assert _close(recomputed[key], metrics[key], tol), (key, recomputed[key], metrics[key])


def test_run_describes_itself(tiny_run):
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["data/name"] == "phantom" and m["data/image_size"] == 64
    assert m["model/encoder"] == "tu-efficientnet_lite0" and m["model/encoder_study"]
    assert "model/encoder_weights" in m and m["seed"] == 1
    assert m["data/num_folds"] is None and m["data/fold"] is None
    assert m["loss/seg_weight"] == 0.7 and m["loss/weighting"] == "fixed"


def test_uncertainty_weights_are_recorded(make_cfg):
    from medmtl.workflows.train import train
    from tests.conftest import TINY_MODEL, TINY_PHANTOM

    cfg = make_cfg(
        TINY_PHANTOM + TINY_MODEL + ["trainer.max_epochs=1", "loss=uncertainty", "seed=0"]
    )
    m = train(cfg)
    assert m["loss/weighting"] == "uncertainty"
    assert m["loss/task_weight_seg"] == pytest.approx(math.exp(-m["loss/log_var_seg"]))
    assert m["loss/task_weight_cls"] > 0 and m["loss/log_var_seg"] != 0.0


def _constructed(n=40, seed=0) -> PerImage:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    prob = rng.dirichlet([1, 1, 1], n)
    gt = np.where(label == 0, 0, rng.integers(10, 100, n))
    tp = np.minimum(gt, rng.integers(0, 100, n))
    pred = tp + rng.integers(0, 20, n)
    return PerImage(
        [f"c/{i}.png" for i in range(n)],
        ("normal", "benign", "malignant"),
        label,
        prob,
        tp,
        gt,
        pred,
        "x",
        "test",
    )


def test_csv_round_trip_and_known_values(tmp_path):
    p = _constructed()
    q = read_predictions(write_predictions(tmp_path / "p.csv", p))
    assert q.ids == p.ids and q.classes == p.classes
    a, b = metrics_dict(p), metrics_dict(q)
    assert a.keys() == b.keys()
    assert {f"test/{k}" for k in ("cls_acc", "cls_f1", "cls_auc", "seg_dice")} <= a.keys()
    assert all(_close(a[k], b[k], 1e-12) for k in a)
    # hand-made: 2 images, one right, one wrong; one lesion hit exactly, one normal left empty
    h = PerImage(
        ["a", "b"],
        ("normal", "lesion"),
        np.array([0, 1]),
        np.array([[0.9, 0.1], [0.6, 0.4]]),
        tp=np.array([0, 10]),
        gt=np.array([0, 10]),
        pred=np.array([0, 10]),
    )
    m = {k: float(v[0]) for k, v in compute_metrics(h).items() if k != "confusion_matrix"}
    assert m["cls_acc"] == 0.5 and m["seg_dice"] == 1.0 and m["normal_fp_rate"] == 0.0
    assert m["cls_auc"] == 1.0  # the lesion image has the higher lesion probability


def test_resampling_weights_equal_explicit_resamples():
    p = _constructed(30, 1)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, len(p), (5, len(p)))
    W = np.stack([np.bincount(r, minlength=len(p)) for r in idx])
    fast = compute_metrics(p, W)
    for b, r in enumerate(idx):
        sub = PerImage(
            [p.ids[i] for i in r], p.classes, p.label[r], p.prob[r], p.tp[r], p.gt[r], p.pred[r]
        )
        slow = compute_metrics(sub)
        for k in (
            "cls_acc",
            "cls_f1",
            "cls_auc",
            "seg_dice",
            "seg_dice_lesion",
            "seg_f1",
            "cls_ece",
        ):
            assert fast[k][b] == pytest.approx(slow[k][0], abs=1e-12), k


def test_average_of_one_run_is_the_run_and_of_two_the_mean():
    p, q = _constructed(seed=0), _constructed(seed=0)
    assert average_runs([p]) is p
    q.prob = np.roll(q.prob, 1, axis=1)
    avg = average_runs([p, q])
    assert np.allclose(avg.prob, (p.prob + q.prob) / 2)
    assert compute_metrics(avg)["seg_dice"][0] == pytest.approx(compute_metrics(p)["seg_dice"][0])


def test_unreadable_predictions_file_is_named(tmp_path):
    from medmtl.errors import DataError

    bad = tmp_path / "predictions_test.csv"
    bad.write_text("id,true_class,prob_a\nx,a,not-a-number\n")
    with pytest.raises(DataError, match="predictions_test.csv"):
        read_predictions(bad)


def test_subset_cuts_every_per_image_field():
    """A breakdown (by=Device, data=multi) scores a subset: answer sets included."""
    from dataclasses import fields, replace

    from medmtl.reporting.per_image import subset

    full = _constructed(n=12)
    sets = full.prob >= 0.3
    full = replace(full, answer_set=sets, meta={"Device": ["a", "b"] * 6})
    keep = [i % 2 == 0 for i in range(12)]
    part = subset(full, keep)
    assert len(part) == 6
    arrays = {f.name: getattr(part, f.name) for f in fields(part)}
    arrays = {k: v for k, v in arrays.items() if isinstance(v, np.ndarray)}
    assert {"label", "prob", "tp", "gt", "pred", "answer_set"} <= arrays.keys()
    assert {k: len(v) for k, v in arrays.items()} == dict.fromkeys(arrays, 6)
    assert np.array_equal(part.answer_set, sets[::2])
    assert part.meta["Device"] == ["a"] * 6
    m = compute_metrics(part)
    assert m["conformal_set_size"][0] == pytest.approx(sets[::2].sum(1).mean())


def test_lesion_counts_round_trip_and_pool_over_images(tmp_path):
    """Lesion sensitivity and false positives per image pool the images' counts (not a mean
    of per-image rates), survive the CSV and resample in the bootstrap."""
    from medmtl.metrics import LESION_COLUMNS
    from medmtl.reporting.statistics import bootstrap_ci

    counts = np.zeros((3, len(LESION_COLUMNS)))
    at = {c: j for j, c in enumerate(LESION_COLUMNS)}
    counts[
        0, [at["lesions"], at["lesions_found"], at["lesions_large"], at["lesions_found_large"]]
    ] = 1
    counts[0, at["lesion_dice_sum_large"]] = 0.8
    counts[1, [at["lesions"], at["lesions_medium"]]] = 3  # three lesions, one found
    counts[1, [at["lesions_found"], at["lesions_found_medium"]]] = 1
    counts[1, at["lesion_dice_sum_medium"]] = 0.6
    counts[2, at["fp_components"]] = 2  # a normal image with two invented lesions
    counts[:, at["hd95"]] = [4.0, np.nan, np.nan]  # b's mask: no HD95; c: a normal image
    counts[:, at["nsd"]] = [0.9, 0.0, np.nan]
    p = PerImage(
        ["a", "b", "c"], ("normal", "benign", "malignant"), np.array([1, 2, 0]),
        tp=np.array([80.0, 30, 0]), gt=np.array([100.0, 90, 0]), pred=np.array([100.0, 40, 20]),
        lesion_counts=counts, split="test",
    )  # fmt: skip
    m = metrics_dict(p)
    assert m["test/lesion_sensitivity"] == 2 / 4  # 2 of 4 lesions, not the mean of 1 and 1/3
    assert m["test/fp_per_image"] == 2 / 3
    assert m["test/lesion_sensitivity_medium"] == 1 / 3 and m["test/lesion_dice_large"] == 0.8
    assert m["test/lesion_dice_medium"] == pytest.approx(0.2)
    assert np.isnan(m["test/lesion_sensitivity_small"])  # no small lesion: undefined
    assert m["test/seg_hd95_lesion"] == 4.0 and m["test/seg_nsd_lesion"] == pytest.approx(0.45)
    back = read_predictions(write_predictions(tmp_path / "predictions_test.csv", p))
    assert np.array_equal(back.lesion_counts, counts, equal_nan=True) and not back.meta
    assert metrics_dict(back)["test/lesion_sensitivity"] == 0.5
    ci = bootstrap_ci(p, ["lesion_sensitivity", "fp_per_image"], n_boot=200)
    assert ci["fp_per_image"].low <= 2 / 3 <= ci["fp_per_image"].high


def test_froc_of_a_perfect_prediction_and_of_a_trade_off():
    """A perfect map: sensitivity 1 at no false positive, CPM 1. A map that finds its second
    lesion only at 1.5 false positives per image: the CPM counts it from the rate 2 on."""
    from medmtl.metrics import FROC_THRESHOLDS, LESION_COLUMNS, lesion_counts
    from medmtl.reporting.evaluation import froc_figure
    from medmtl.reporting.per_image import froc_cpm, froc_curve
    from medmtl.reporting.per_image import lesions as lesion_metrics

    lesions = np.zeros((40, 40), dtype=np.uint8)
    lesions[5:15, 5:15] = 1
    lesions[25:35, 25:35] = 2
    perfect = np.stack([lesion_counts(lesions, lesions > 0)] * 2)
    fp, sens = froc_curve(perfect)
    assert fp.shape == sens.shape == (1, len(FROC_THRESHOLDS))
    assert (sens == 1).all() and (fp == 0).all() and froc_cpm(fp, sens)[0] == 1.0
    at = {c: j for j, c in enumerate(LESION_COLUMNS)}
    counts = np.zeros((2, len(LESION_COLUMNS)))
    counts[:, at["lesions"]] = 1
    for t in FROC_THRESHOLDS:  # one of the two lesions found, both only below 0.3 with 3 FP
        low = t < 0.3
        counts[:, at[f"lesions_found_t{t:g}"]] = [1, 1 if low else 0]
        counts[:, at[f"fp_components_t{t:g}"]] = [3, 0] if low else [0, 0]
    fp, sens = froc_curve(counts)
    assert sens[0].tolist() == [1.0 if t < 0.3 else 0.5 for t in FROC_THRESHOLDS]
    assert fp[0].tolist() == [1.5 if t < 0.3 else 0.0 for t in FROC_THRESHOLDS]
    # rates 1/8 .. 1: 0.5; 2, 4, 8: 1.0
    assert froc_cpm(fp, sens)[0] == pytest.approx((4 * 0.5 + 3 * 1.0) / 7)
    assert froc_figure(counts, "test FROC", n_boot=50) is not None
    assert froc_figure(np.zeros((2, len(LESION_COLUMNS))), "no lesion") is None
    p = PerImage(["a", "b"], ("normal", "benign", "malignant"), np.array([1, 1]),
                 lesion_counts=counts, split="test")  # fmt: skip
    assert lesion_metrics(p)["lesion_froc_cpm"][0] == pytest.approx(5 / 7)

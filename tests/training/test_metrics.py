"""Metrics against hand-computed values; the empty-mask conventions in particular."""

from __future__ import annotations

import math

import pytest
import torch

from medmtl.training.metrics import SegMetrics, classification_metrics, flatten_results

BIG = 20.0  # a logit that is certainly above/below the 0.5 threshold


def _logits(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.bool(), BIG, -BIG)


def test_seg_metrics_hand_checked():
    gt = torch.zeros(4, 1, 4, 4)
    pred = torch.zeros(4, 1, 4, 4)
    # image 0: lesion of 4 px, prediction covers 2 of them + 2 extra -> dice 0.5, iou 1/3
    gt[0, 0, 0, :4] = 1
    pred[0, 0, 0, :2] = 1
    pred[0, 0, 1, :2] = 1
    # image 1: perfect lesion
    gt[1, 0, 2, 2] = 1
    pred[1, 0, 2, 2] = 1
    # image 2: normal, empty prediction -> counts as 1 in all-image Dice
    # image 3: normal with a false positive pixel -> 0
    pred[3, 0, 3, 3] = 1
    m = SegMetrics()
    m.update(_logits(pred), gt)
    r = {k: float(v) for k, v in m.compute().items()}
    assert r["seg_dice_lesion"] == pytest.approx((0.5 + 1.0) / 2)
    assert r["seg_iou_lesion"] == pytest.approx((1 / 3 + 1.0) / 2)
    assert r["seg_dice"] == pytest.approx((0.5 + 1.0 + 1.0 + 0.0) / 4)
    assert r["seg_iou"] == pytest.approx((1 / 3 + 1.0 + 1.0 + 0.0) / 4)
    # pooled pixels: TP 3, FP 3, FN 2
    assert r["seg_f1"] == pytest.approx(2 * 3 / (2 * 3 + 3 + 2))
    assert r["normal_fp_rate"] == pytest.approx(0.5)


def test_seg_metrics_undefined_parts_are_nan():
    m = SegMetrics()
    m.update(_logits(torch.zeros(2, 1, 4, 4)), torch.zeros(2, 1, 4, 4))
    r = m.compute()
    assert math.isnan(float(r["seg_dice_lesion"]))
    assert float(r["seg_dice"]) == 1.0 and float(r["normal_fp_rate"]) == 0.0


def test_seg_metrics_accumulate_over_batches():
    gt = torch.zeros(2, 1, 4, 4)
    gt[:, 0, 0, 0] = 1
    a, b = SegMetrics(), SegMetrics()
    a.update(_logits(gt), gt)
    for i in range(2):
        b.update(_logits(gt[i : i + 1]), gt[i : i + 1])
    ra, rb = a.compute(), b.compute()
    assert ra.keys() == rb.keys()
    for k in ra:
        assert float(ra[k]) == pytest.approx(float(rb[k]), nan_ok=True), k


def test_classification_metrics_and_flat_keys():
    coll = classification_metrics(3)
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]])
    target = torch.tensor([0, 1, 2, 2])
    coll.update(probs, target)
    flat = flatten_results("test", coll.compute(), ["normal", "benign", "malignant"])
    assert flat["test/cls_acc"] == pytest.approx(0.75)
    # per class F1: normal 1, benign 2/3, malignant 2/3
    assert flat["test/cls_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert flat["test/cls_f1_benign"] == pytest.approx(2 / 3)
    assert flat["test/confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert 0 <= flat["test/cls_auc"] <= 1

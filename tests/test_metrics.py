"""The metric definitions (medmtl.metrics): one implementation for torch and numpy alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from medmtl.metrics import calibration, dice_iou, mask_dice, overall_score
from medmtl.reporting.evaluation import reliability


def test_dice_iou_numpy_and_torch_agree_with_the_empty_convention():
    tp, fp, fn = [4, 0, 0, 3], [4, 0, 2, 0], [0, 0, 0, 3]  # half, empty-empty, false alarm, 1/2
    d_np, i_np = dice_iou(*(np.array(a, float) for a in (tp, fp, fn)))
    d_t, i_t = dice_iou(*(torch.tensor(a, dtype=torch.float64) for a in (tp, fp, fn)))
    assert d_np.tolist() == pytest.approx([8 / 12, 1.0, 0.0, 6 / 9])
    assert i_np.tolist() == pytest.approx([4 / 8, 1.0, 0.0, 3 / 6])
    assert d_t.tolist() == d_np.tolist() and i_t.tolist() == i_np.tolist()


def test_mask_dice():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    assert mask_dice(a, b) == 1.0  # both empty
    a[0, :2], b[0, 1:3] = True, True
    assert mask_dice(a, b) == pytest.approx(0.5)


def test_ece_equals_torchmetrics_and_weights_repeat_images():
    rng = np.random.default_rng(0)
    prob = rng.dirichlet([1, 1, 1], size=200)
    label = rng.integers(0, 3, 200)
    ours = calibration(prob, label)["ece"][0]
    ref = MulticlassCalibrationError(num_classes=3, n_bins=10, norm="l1")(
        torch.from_numpy(prob), torch.from_numpy(label)
    )
    assert ours == pytest.approx(float(ref), abs=1e-6)
    # a weight of 2 is the image drawn twice (what the bootstrap relies on)
    w = rng.integers(0, 3, 200)
    repeated = calibration(np.repeat(prob, w, 0), np.repeat(label, w))["ece"][0]
    assert calibration(prob, label, w[None])["ece"][0] == pytest.approx(repeated)
    # the reliability diagram reports the same ECE as metrics.json
    assert reliability(prob, label)[3] == pytest.approx(ours)


def test_overall_score():
    assert overall_score(0.6, 0.8, "multitask") == pytest.approx(0.7)
    assert overall_score(0.6, 0.8, "seg") == 0.8 and overall_score(0.6, 0.8, "cls") == 0.6

"""The statistics behind the tables, on constructed data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from medmtl.reporting.per_image import PerImage, compute_metrics
from medmtl.reporting.statistics import (
    bootstrap_ci,
    holm,
    mean_ci,
    paired_differences,
    resample_weights,
)

CLASSES = ("normal", "benign", "malignant")


def make_run(n: int = 150, acc: float = 0.8, dice: float = 0.7, seed: int = 0) -> PerImage:
    """A run whose expected accuracy and lesion Dice are known."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    right = rng.random(n) < acc
    pred = np.where(right, label, (label + rng.integers(1, 3, n)) % 3)
    prob = np.full((n, 3), 0.1)
    prob[np.arange(n), pred] = 0.8
    gt = np.where(label == 0, 0, 100).astype(float)
    # per-image Dice d with gt = pred = 100 pixels: tp = 100 d
    d = np.clip(rng.normal(dice, 0.1, n), 0, 1)
    tp = np.round(gt * d)
    return PerImage([f"img/{i}.png" for i in range(n)], CLASSES, label, prob, tp, gt, gt.copy())


def test_resample_weights_are_draws_with_replacement():
    W = resample_weights(50, 200, seed=1)
    assert W.shape == (200, 50) and (W.sum(1) == 50).all()
    assert np.array_equal(W, resample_weights(50, 200, seed=1))  # seeded
    assert not np.array_equal(W, resample_weights(50, 200, seed=2))


def test_identical_runs_differ_by_zero_with_p_one():
    a = make_run(seed=3)
    diffs = paired_differences([a], [a], ["cls_acc", "seg_dice", "cls_auc"], paired=True)
    assert set(diffs) == {"cls_acc", "seg_dice", "cls_auc"}
    for d in diffs.values():
        assert d.ci.value == 0 and d.ci.low == 0 and d.ci.high == 0
        assert d.p == 1.0


def test_clearly_better_run_is_significant_and_a_noisy_copy_is_not():
    base = make_run(acc=0.6, dice=0.5, seed=4)
    better = make_run(acc=0.95, dice=0.85, seed=4)
    d = paired_differences([better], [base], ["cls_acc", "seg_dice_lesion"], paired=True)
    assert d["cls_acc"].ci.low > 0.2 and d["cls_acc"].p < 0.01
    assert d["seg_dice_lesion"].ci.low > 0.25 and d["seg_dice_lesion"].p < 0.01
    # same quality, independent errors: no significant difference (with this seed)
    other = make_run(acc=0.6, dice=0.5, seed=5)
    other.label, other.gt = base.label, base.gt
    d = paired_differences([other], [base], ["seg_dice"], paired=True, seed=0)
    assert d["seg_dice"].ci.low < 0 < d["seg_dice"].ci.high and d["seg_dice"].p > 0.05


def test_paired_by_seed_averages_the_pairs_and_unpaired_averages_the_runs():
    a1, a2 = make_run(acc=0.9, seed=1), make_run(acc=0.9, seed=1)
    b1, b2 = make_run(acc=0.7, seed=1), make_run(acc=0.7, seed=1)
    paired = paired_differences([a1, a2], [b1, b2], ["cls_acc"], paired=True)["cls_acc"]
    unpaired = paired_differences([a1, a2], [b1, b2], ["cls_acc"], paired=False)["cls_acc"]
    expected = compute_metrics(a1)["cls_acc"][0] - compute_metrics(b1)["cls_acc"][0]
    assert paired.ci.value == pytest.approx(expected) and unpaired.ci.value == pytest.approx(
        expected
    )
    assert paired.paired and not unpaired.paired


def test_bootstrap_ci_covers_the_true_accuracy_about_95_percent():
    hits = 0
    trials = 200
    for t in range(trials):
        run = make_run(n=150, acc=0.8, seed=100 + t)
        ci = bootstrap_ci(run, ["cls_acc"], n_boot=1000, seed=t)["cls_acc"]
        hits += ci.low <= 0.8 <= ci.high
    assert 0.88 <= hits / trials <= 0.99


def test_mean_ci_is_the_t_interval():
    mean, sd, ci = mean_ci([0.70, 0.72, 0.74])
    assert mean == pytest.approx(0.72) and sd == pytest.approx(0.02)
    assert ci.high - mean == pytest.approx(4.302653 * 0.02 / 3**0.5, rel=1e-5)


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, float("nan")])[0] == 0.5


def test_different_images_cannot_be_paired():
    from medmtl.errors import DataError

    a, b = make_run(n=20), make_run(n=21)
    with pytest.raises(DataError, match="different images"):
        paired_differences([a], [b], ["cls_acc"], paired=True)

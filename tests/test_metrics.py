"""The metric definitions (medmtl.metrics): one implementation for torch and numpy alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from medmtl.metrics import brier, calibration, dice_iou, entropy, mask_dice, nll, overall_score
from medmtl.reporting.evaluation import reliability, reliability_figure
from medmtl.training.metrics import classification_metrics


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


def test_nll_and_brier_in_training_equal_the_numpy_definitions():
    rng = np.random.default_rng(1)
    prob = rng.dirichlet([1, 1, 1], size=50)
    label = rng.integers(0, 3, 50)
    metrics = classification_metrics(3)
    metrics.update(torch.from_numpy(prob), torch.from_numpy(label))
    out = metrics.compute()
    assert float(out["cls_nll"]) == pytest.approx(nll(prob, label)[0])
    assert float(out["cls_brier"]) == pytest.approx(brier(prob, label)[0])
    # a weight of 2 is the image drawn twice, as for the ECE
    w = rng.integers(0, 3, 50)
    assert nll(prob, label, w[None])[0] == pytest.approx(
        nll(np.repeat(prob, w, 0), np.repeat(label, w))[0]
    )


def test_reliability_figure_shows_before_and_after_calibration():
    rng = np.random.default_rng(2)
    prob = rng.dirichlet([1, 1, 1], size=80)
    label = rng.integers(0, 3, 80)
    sharp = prob**3 / (prob**3).sum(1, keepdims=True)
    fig = reliability_figure(prob, label, "test reliability", before=sharp)
    ax = fig.axes[0]
    before, after = reliability(sharp, label)[3], reliability(prob, label)[3]
    assert ax.get_title() == f"test reliability — ECE {before:.3f} → {after:.3f}"
    labels = ax.get_legend_handles_labels()[1]
    assert "before calibration" in labels and "calibrated" in labels
    plain = reliability_figure(prob, label, "t").axes[0]
    assert "before calibration" not in plain.get_legend_handles_labels()[1]


def test_entropy_is_normalised():
    prob = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(entropy(prob), [0.0, 1.0, np.log(2) / np.log(3)])
    assert entropy(np.array([0.2, 0.8])).shape == (1,)


def test_overall_score():
    assert overall_score(0.6, 0.8, "multitask") == pytest.approx(0.7)
    assert overall_score(0.6, 0.8, "seg") == 0.8 and overall_score(0.6, 0.8, "cls") == 0.6


def test_disagreement_known_values():
    from medmtl.metrics import class_disagreement, disagreement, mask_agreement

    same = np.array([[[0.2, 0.8]], [[0.2, 0.8]]])
    opposite = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert class_disagreement(same)[0] == pytest.approx(0.0, abs=1e-12)
    assert class_disagreement(opposite)[0] == pytest.approx(1.0)  # two certain, opposite answers
    a = np.zeros((1, 4, 4))
    a[0, :2] = 1  # 8 pixels
    b = np.zeros((1, 4, 4))
    b[0, :1] = 1  # 4 of them
    empty = np.zeros((1, 4, 4))
    assert mask_agreement(np.stack([a, b]))[0] == pytest.approx(2 * 4 / 12)
    assert mask_agreement(np.stack([empty, empty]))[0] == 1.0  # both find no lesion: they agree
    assert mask_agreement(np.stack([a, a, b]))[0] == pytest.approx((1 + 2 * (8 / 12)) / 3)
    # an ensemble's members are preferred to the mirror views; one prediction: nothing
    out = disagreement({"member_cls": opposite, "view_cls": same})
    assert out["class_disagreement"][0] == pytest.approx(1.0)
    assert disagreement({"member_cls": None}) == {}


def test_refer_flags_wide_sets_and_unlike_scans():
    from medmtl.metrics import refer

    sets = np.array([[0, 1, 0], [0, 1, 1], [0, 0, 0], [1, 0, 0]], dtype=float)
    unlike = np.array([0.5, 0.5, 0.5, 1.5])
    np.testing.assert_array_equal(refer(sets, unlike), [0, 1, 1, 1])
    np.testing.assert_array_equal(refer(sets, None), [0, 1, 1, 0])
    np.testing.assert_array_equal(refer(None, np.array([np.nan, 2.0])), [0, 1])
    assert refer(None, None) is None


def test_lesions_two_found_one_split_and_a_false_positive():
    from medmtl.metrics import LESION_FOUND_IOU, match_lesions

    lesions = np.zeros((40, 40), dtype=int)
    lesions[2:12, 2:12] = 1  # found by a prediction in two pieces
    lesions[20:30, 20:30] = 2  # missed
    pred = np.zeros((40, 40), dtype=bool)
    pred[2:12, 2:6] = True
    pred[2:12, 8:12] = True  # the same lesion, a second piece: not a false positive
    pred[35:38, 2:5] = True  # touches no lesion: a false positive
    ious, areas, fp = match_lesions(lesions, pred)
    assert ious[0] == 0.8 and ious[1] == 0.0 and list(areas) == [100, 100] and fp == 1
    assert (ious >= LESION_FOUND_IOU).tolist() == [True, False]
    # a perfect prediction finds every lesion and invents nothing
    ious, _, fp = match_lesions(lesions, lesions > 0)
    assert ious.tolist() == [1.0, 1.0] and fp == 0
    # no lesion, no prediction
    ious, areas, fp = match_lesions(np.zeros((8, 8), int), np.zeros((8, 8), bool))
    assert len(ious) == 0 and fp == 0


def test_lesion_counts_by_size_bin():
    from medmtl.metrics import LESION_COLUMNS, lesion_counts

    truth = np.zeros((100, 100), dtype=bool)
    truth[0:5, 0:5] = True  # 25 px = 0.25 % of the image: small, missed
    truth[40:70, 40:70] = True  # 900 px = 9 %: large, found exactly
    pred = np.zeros_like(truth)
    pred[40:70, 40:70] = True
    pred[90:95, 90:95] = True  # a false positive
    row = dict(zip(LESION_COLUMNS, lesion_counts(truth, pred), strict=True))
    assert (row["lesions"], row["lesions_found"], row["fp_components"]) == (2, 1, 1)
    assert (row["lesions_small"], row["lesions_found_small"], row["lesion_dice_sum_small"]) == (
        1, 0, 0.0
    )  # fmt: skip
    assert (row["lesions_large"], row["lesions_found_large"], row["lesion_dice_sum_large"]) == (
        1, 1, 1.0
    )  # fmt: skip
    assert row["lesions_medium"] == 0
    # a normal image left empty: nothing to find, nothing invented
    empty = dict(zip(LESION_COLUMNS, lesion_counts(np.zeros((8, 8), bool), np.zeros((8, 8), bool)),
                     strict=True))  # fmt: skip
    assert np.isnan(empty.pop("hd95")) and np.isnan(empty.pop("nsd"))  # no boundary to measure
    assert not any(empty.values())


def test_froc_counts_over_the_mask_threshold():
    """Lesion 1 at probability 0.9, lesion 2 at 0.3, an invented blob at 0.6: each threshold
    finds and invents what lies above it; a perfect map finds all at every threshold."""
    from medmtl.metrics import FROC_THRESHOLDS, LESION_COLUMNS, lesion_counts

    lesions = np.zeros((60, 60), dtype=np.uint8)
    lesions[5:20, 5:20] = 1
    lesions[30:45, 30:45] = 2
    prob = np.zeros((60, 60))
    prob[5:20, 5:20] = 0.9
    prob[30:45, 30:45] = 0.3
    prob[50:55, 5:10] = 0.6
    row = dict(zip(LESION_COLUMNS, lesion_counts(lesions, prob), strict=True))
    assert (row["lesions"], row["lesions_found"], row["fp_components"]) == (2, 1, 1)  # at 0.5
    want = {0.05: (2, 1), 0.2: (2, 1), 0.3: (2, 1), 0.4: (1, 1), 0.6: (1, 1), 0.7: (1, 0),
            0.9: (1, 0), 0.95: (0, 0)}  # fmt: skip
    for t, (found, fp) in want.items():
        assert (row[f"lesions_found_t{t:g}"], row[f"fp_components_t{t:g}"]) == (found, fp), t
    perfect = dict(zip(LESION_COLUMNS, lesion_counts(lesions, lesions > 0), strict=True))
    assert all(perfect[f"lesions_found_t{t:g}"] == 2 for t in FROC_THRESHOLDS)
    assert all(perfect[f"fp_components_t{t:g}"] == 0 for t in FROC_THRESHOLDS)


def test_refer_reasons_name_each_cause_and_the_mask_rule_needs_its_threshold():
    from medmtl.metrics import refer, refer_reasons

    sets = np.array([[0, 1, 0], [0, 1, 1], [0, 0, 0], [0, 1, 0]], dtype=float)
    unlike = np.array([0.5, 0.5, 0.5, np.nan])
    agree = np.array([0.95, 0.9, 0.9, 0.4])
    names = ("normal", "benign", "malignant")
    why = refer_reasons(sets, unlike, agree, 0.6, names)
    assert why == [[], ["it could be benign or malignant"], ["no class fits"],
                   ["the models' outlines agree only 40 %"]]  # fmt: skip
    np.testing.assert_array_equal(refer(sets, unlike, agree, 0.6), [0, 1, 1, 1])
    # no threshold (a single model): mask agreement refers nothing
    np.testing.assert_array_equal(refer(sets, unlike, agree, None), [0, 1, 1, 0])
    assert refer_reasons(None, None, agree, None) is None
    np.testing.assert_array_equal(refer(None, None, agree, 0.6), [0, 0, 0, 1])

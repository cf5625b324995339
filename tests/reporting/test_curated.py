"""The curated-BUSI comparison: its Dice convention per class, weighted F1, a sweep of 4
cross-validation folds as a per-fold row and a pooled out-of-fold row, and Table 5 beside it
(``medmtl-tables <sweep> columns=curated reference=curated``)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import f1_score

from medmtl.errors import DataError, MedmtlError
from medmtl.reporting.curated import curated_reference
from medmtl.reporting.per_image import PerImage, concat, metrics_dict, read_predictions
from medmtl.reporting.render import render
from medmtl.reporting.runs import collect_runs
from medmtl.reporting.tables import COLUMN_SETS, build_table, table_cells
from medmtl.workflows.tables import write_tables

CLASSES = ("normal", "benign", "malignant")


def _fold(k: int, empty_normals: int, benign: float, malignant: float) -> PerImage:
    """4 normal images (``empty_normals`` of them with an empty predicted mask, the others with
    30 pixels), 4 benign with Dice ``benign``, 4 malignant with Dice ``malignant``."""
    label = np.array([0] * 4 + [1] * 4 + [2] * 4)
    gt = np.where(label == 0, 0, 100).astype(float)
    d = np.where(label == 1, benign, malignant)
    pred = np.where(label == 0, np.where(np.arange(12) < empty_normals, 0, 30), 100).astype(float)
    tp = np.where(label == 0, 0, np.round(100 * d))
    prob = np.full((12, 3), 0.1)
    called = label.copy()
    called[k] = 1  # fold k gets image k wrong (a normal image called benign)
    prob[np.arange(12), called] = 0.8
    ids = [f"{CLASSES[c]}/{CLASSES[c]} ({k * 12 + i}).png" for i, c in enumerate(label)]
    return PerImage(ids, CLASSES, label, prob, tp, gt, pred, dataset="busi_curated", split="test")


FOLDS = [_fold(0, 4, 0.8, 0.7), _fold(1, 3, 0.7, 0.6), _fold(2, 2, 0.9, 0.7), _fold(3, 4, 0.8, 0.5)]


def test_dice_per_class_follows_the_empty_mask_convention():
    m = metrics_dict(FOLDS[1])
    # normal: 3 empty predictions (empty/empty = 1) and one with pixels (empty/non-empty = 0)
    assert m["test/seg_dice_normal"] == 0.75
    assert m["test/seg_dice_benign"] == pytest.approx(0.7)
    assert m["test/seg_dice_malignant"] == pytest.approx(0.6)
    # DSC avg: every image with that convention; lesion Dice leaves the normal images out
    assert m["test/seg_dice"] == pytest.approx((3 + 4 * 0.7 + 4 * 0.6) / 12)
    assert m["test/seg_dice_lesion"] == pytest.approx((0.7 + 0.6) / 2)
    assert m["test/normal_fp_rate"] == 0.25


def test_weighted_f1_is_scikit_learns():
    rng = np.random.default_rng(0)
    label = rng.choice(3, 200, p=[0.15, 0.5, 0.35])
    pred = np.where(rng.random(200) < 0.7, label, rng.integers(0, 3, 200))
    prob = np.full((200, 3), 0.1)
    prob[np.arange(200), pred] = 0.8
    p = PerImage([str(i) for i in range(200)], CLASSES, label, prob)
    expected = f1_score(label, pred, average="weighted")
    assert metrics_dict(p, "test")["test/cls_f1_weighted"] == pytest.approx(expected)


def test_pooling_refuses_folds_that_share_an_image():
    with pytest.raises(DataError, match="share 12 image"):
        concat([FOLDS[0], FOLDS[0]])


def _sweep(root: Path, data: str = "busi_curated", folds: int = 4, fail: int | None = None) -> Path:
    for k, per in enumerate(FOLDS):
        job = root / str(k)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"data.fold={k}"]))
        if k == fail:
            (job / "failed.json").write_text(json.dumps({"error": "boom"}))
            continue
        from medmtl.reporting.per_image import write_predictions

        write_predictions(job / "predictions_test.csv", per)
        metrics = metrics_dict(per, "test")
        metrics.update({"data/name": data, "data/cv_folds": folds, "data/fold": k,
                        "model/task": "multitask", "seed": 42})  # fmt: skip
        (job / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_a_fold_sweep_has_a_per_fold_row_and_a_pooled_out_of_fold_row(tmp_path):
    root = _sweep(tmp_path / "sweep")
    table = build_table(collect_runs(root), root)
    assert table.labels() == [
        "4-fold cross-validation, per fold",
        "4-fold cross-validation, per fold · out-of-fold, pooled (48 images)",
    ]
    header, texts, _ = table_cells(table, COLUMN_SETS["curated"], ci=True)
    normal = [metrics_dict(p)["test/seg_dice_normal"] for p in FOLDS]
    per_fold = texts[0][header.index("DSC normal")]
    assert per_fold.startswith(f"{statistics.fmean(normal):.3f} ± {statistics.stdev(normal):.3f} [")
    # the pooled row is one evaluation of the 48 images, each predicted once
    pooled = table.rows[1][1][0]
    assert pooled.is_out_of_fold and sorted(pooled.predictions().ids) == sorted(
        i for p in FOLDS for i in p.ids
    )
    assert texts[1][header.index("DSC normal")].startswith(f"{13 / 16:.3f} [")
    assert texts[1][header.index("ACC")].startswith(f"{44 / 48:.3f} [")
    _, files = write_tables(root, tmp_path / "t", columns="curated", ci=False)
    written = read_predictions(files["out_of_fold_1"])
    assert len(written) == 48 and written.ids == pooled.predictions().ids


def test_table_5_stands_beside_the_per_fold_row_with_the_differences(tmp_path):
    root = _sweep(tmp_path / "sweep")
    table = build_table(collect_runs(root), root)
    md = render(table, "md", reference="curated", columns="curated", ci=False)
    lines = md.splitlines()
    at = next(
        i for i, ln in enumerate(lines) if ln.startswith("| 4-fold cross-validation, per fold |")
    )
    published, diff = lines[at + 1], lines[at + 2]
    assert published.startswith("| curated study: proposed (published) | 0.773 ± 0.050 | 0.711 ± ")
    assert "| 0.781 ± 0.157 | 0.751 ± 0.018 | 0.801 ± 0.026 | 0.802 ± 0.018 |" in published
    cells = [c.strip() for c in diff.strip("|").split("|")]
    assert cells[0] == "Δ ours − published"
    mean = {k: statistics.fmean(metrics_dict(p)[f"test/{k}"] for p in FOLDS)
            for k in ("seg_dice_benign", "seg_dice_normal", "seg_dice", "cls_acc")}  # fmt: skip
    assert cells[1] == f"{mean['seg_dice_benign'] - 0.773:+.3f}"
    assert cells[3] == f"{mean['seg_dice_normal'] - 0.781:+.3f}"
    assert cells[4] == f"{mean['seg_dice'] - 0.751:+.3f}"
    assert cells[6] == f"{mean['cls_acc'] - 0.802:+.3f}"
    assert cells[7] == ""  # lesion Dice: not published
    # the pooled row has no published counterpart (they did not pool)
    assert lines[at + 3].startswith("| 4-fold cross-validation, per fold · out-of-fold, pooled")
    assert md.count("(published)") == 1
    assert {r.configuration for r in curated_reference()} >= {"proposed", "multi-task"}


def test_reference_curated_refuses_other_data_and_other_folds(tmp_path):
    with pytest.raises(MedmtlError, match="runs are on busi;"):
        write_tables(_sweep(tmp_path / "a", data="busi"), reference="curated", figures=False)
    with pytest.raises(MedmtlError, match="data.split.folds=5"):
        write_tables(_sweep(tmp_path / "b", folds=5), reference="curated", figures=False)


def test_a_failed_fold_leaves_no_pooled_row(tmp_path):
    root = _sweep(tmp_path / "sweep", fail=2)
    table = build_table(collect_runs(root), root)
    assert len(table.rows) == 1 and len(table.problems) == 1


def test_the_pooled_row_is_not_marked_best_against_its_own_folds(tmp_path):
    root = _sweep(tmp_path / "sweep")
    _, _, bold = table_cells(build_table(collect_runs(root), root), COLUMN_SETS["curated"])
    assert not any(bold[0]) and not any(bold[1])  # one row of models: nothing to rank

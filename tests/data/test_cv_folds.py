"""data.split.folds: a published protocol's cross-validation (curated BUSI: 4 stratified folds
by image, the test side one fold, model selection on 20 % of the others)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medmtl.data.image_list import read_image_list
from medmtl.data.splits import SPLITS, cv_split, make_cv_folds, read_split_file, write_split_file
from medmtl.errors import ConfigError, DataError
from medmtl.settings.data import check_data

ROOT = Path(__file__).resolve().parents[2]


def test_folds_are_stratified_disjoint_and_cover_every_image_once():
    labels = [0] * 64 + [1] * 222 + [2] * 164
    parts = make_cv_folds(labels, list(range(len(labels))), 4, seed=42)
    assert len(parts) == 450 and set(parts) == {"fold0", "fold1", "fold2", "fold3"}
    for c, n in Counter(labels).items():
        per_fold = Counter(p for p, lab in zip(parts, labels, strict=True) if lab == c)
        assert sum(per_fold.values()) == n and max(per_fold.values()) - min(per_fold.values()) <= 1
    # each fold's split: its fold is the test side, the rest trains or validates, never both
    tests = []
    for fold in range(4):
        split = cv_split(parts, labels, list(range(450)), fold, 0.2, seed=42)
        test = {i for i, s in enumerate(split) if s == "test"}
        assert test == {i for i, p in enumerate(parts) if p == f"fold{fold}"}
        val = [i for i, s in enumerate(split) if s == "val"]
        assert not test & set(val)
        assert abs(len(val) - 0.2 * (450 - len(test))) <= 4  # 20 % of the other three folds
        val_classes = Counter(labels[i] for i in val)
        assert all(val_classes[c] > 0 for c in range(3))  # stratified
        tests.append(test)
    assert sorted(i for t in tests for i in t) == list(range(450))  # each image tested once


def test_folds_keep_a_group_in_one_fold():
    labels = [0, 1, 2] * 20
    groups = [i // 2 for i in range(60)]  # pairs of images
    parts = make_cv_folds(labels, groups, 4, seed=0)
    for g in set(groups):
        assert len({p for p, gg in zip(parts, groups, strict=True) if gg == g}) == 1


def test_too_few_images_for_the_folds_is_one_line():
    with pytest.raises(DataError, match="too few for 4 stratified folds"):
        make_cv_folds([0, 0, 1, 1, 2, 2], list(range(6)), 4)


def test_the_committed_curated_folds_are_the_list_in_four_stratified_folds():
    doc = json.loads((ROOT / "splits" / "busi_curated.json").read_text())
    assert doc["settings"]["folds"] == 4 and doc["settings"]["by"] == "image"
    listed = read_image_list(ROOT / "lists" / "curated_busi.csv")
    ids = {f"{c}/{c} ({n}).png" for c, n in listed}
    assert set(doc["cases"]) == ids and len(ids) == 450
    for c in ("normal", "benign", "malignant"):
        counts = [doc["counts"][f"fold{k}"][c] for k in range(4)]
        assert max(counts) - min(counts) <= 1 and sum(counts) == {"normal": 64, "benign": 222,
                                                                  "malignant": 164}[c]  # fmt: skip


def test_a_split_file_of_the_other_kind_is_refused(tmp_path):
    ids = [f"b/{i}.png" for i in range(8)]
    labels = [0, 1] * 4
    path = tmp_path / "split.json"
    write_split_file(path, ids, labels, ["a", "b"], ["train"] * 6 + ["val", "test"],
                     list(range(8)), {"dataset": "x"})  # fmt: skip
    with pytest.raises(DataError, match="holds a train/val/test split.*data.split.folds=4"):
        read_split_file(path, ids, folds=4)
    parts = make_cv_folds(labels, list(range(8)), 2)
    write_split_file(path, ids, labels, ["a", "b"], parts, list(range(8)),
                     {"dataset": "x", "folds": 2}, parts=("fold0", "fold1"))  # fmt: skip
    assert read_split_file(path, ids, folds=2)[0] == parts
    with pytest.raises(DataError, match="holds 2 cross-validation folds"):
        read_split_file(path, ids)
    with pytest.raises(DataError, match="data.fold=3: the split file has the folds fold0, fold1"):
        cv_split(parts, labels, list(range(8)), 3, 0.2)
    assert set(SPLITS) == {"train", "val", "test"}


def test_fold_settings_are_checked_together():
    with pytest.raises(ConfigError, match="exclude each other"):
        check_data({"split": {"folds": 4}, "num_folds": 5})
    with pytest.raises(ConfigError, match=r"data.fold=4: must be in 0..3 for data.split.folds=4"):
        check_data({"split": {"folds": 4}, "fold": 4})
    with pytest.raises(ConfigError, match="data.split.by"):
        check_data({"split": {"folds": 4, "by": "patient"}})
    check_data({"split": {"folds": 4, "by": "image"}, "fold": 3})


def test_curated_busi_trains_on_three_folds_and_tests_on_its_own(busi):
    from medmtl.config import compose
    from medmtl.data.build import datamodule_from_config

    doc = json.loads((ROOT / "splits" / "busi_curated.json").read_text())
    cfg = compose("train", ["experiment=curated_cpu", f"data.root={busi}", "data.fold=2"])
    dm = datamodule_from_config(cfg.data)
    dm.setup()
    ids = [c.case_id for c in dm.index.cases]
    test = {i for i, s in zip(ids, dm.split, strict=True) if s == "test"}
    assert test == {i for i, e in doc["cases"].items() if e["split"] == "fold2"}
    counts = Counter(dm.split)
    assert counts["test"] == 112 and counts["val"] + counts["train"] == 338
    assert np.isclose(counts["val"] / 338, 0.2, atol=0.01)

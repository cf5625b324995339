"""Leakage-safe splits: near-duplicate groups never cross train/val/test, k-fold keeps test."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from medmtl.config import project_root
from medmtl.data.datamodule import MedDataModule
from medmtl.data.duplicates import find_groups
from medmtl.data.splits import kfold_train_val, make_split
from medmtl.errors import DataError

SPLIT_FILE = project_root() / "splits" / "busi.json"


@pytest.fixture(scope="module")
def busi_dm(busi, cache_dir):
    dm = MedDataModule.from_config(
        dict(root=str(busi), split_file=str(SPLIT_FILE), cache_dir=str(cache_dir), image_size=64)
    )
    dm.setup()
    return dm


def test_committed_split_is_70_10_20_and_stratified(busi_dm):
    counts = Counter(busi_dm.split)
    assert counts["train"] + counts["val"] + counts["test"] == 780
    assert abs(counts["test"] / 780 - 0.2) < 0.02
    assert abs(counts["val"] / 780 - 0.1) < 0.02
    for cls in range(3):
        labels = [c.label for c in busi_dm.index.cases]
        share = [
            sum(1 for lab, s in zip(labels, busi_dm.split, strict=True) if lab == cls and s == sp)
            / counts[sp]
            for sp in ("train", "test")
        ]
        assert abs(share[0] - share[1]) < 0.05


def test_no_near_duplicate_group_crosses_splits(busi_dm):
    # recompute the groups from the images themselves, independently of the file
    found = find_groups([it.thumb for it in busi_dm.items], threshold=0.95)
    for members in found.members().values():
        assert len({busi_dm.split[i] for i in members}) == 1
    assert len(found.members()) > 100  # BUSI has well over a hundred near-duplicate groups


def test_mixed_class_groups_are_listed(busi_dm):
    doc = json.loads(SPLIT_FILE.read_text())
    mixed = doc["mixed_class_groups"]
    assert [
        "benign/benign (433).png",
        "benign/benign (435).png",
        "malignant/malignant (145).png",
    ] in mixed
    assert len(mixed) == 8


def test_kfold_keeps_test_and_groups(busi_dm):
    labels = [c.label for c in busi_dm.index.cases]
    vals = []
    for k in range(5):
        split = kfold_train_val(busi_dm.split, labels, busi_dm.groups, 5, k)
        assert [s == "test" for s in split] == [s == "test" for s in busi_dm.split]
        for g in set(busi_dm.groups):
            assert len({split[i] for i, gg in enumerate(busi_dm.groups) if gg == g}) == 1
        vals.append({i for i, s in enumerate(split) if s == "val"})
    assert set().union(*vals) == {i for i, s in enumerate(busi_dm.split) if s != "test"}
    assert all(not (a & b) for i, a in enumerate(vals) for b in vals[i + 1 :])


def test_datamodule_kfold_option(busi, cache_dir):
    dm = MedDataModule.from_config(
        dict(
            root=str(busi),
            split_file=str(SPLIT_FILE),
            cache_dir=str(cache_dir),
            image_size=64,
            num_folds=5,
            fold=2,
        )
    )
    dm.setup()
    assert 0.1 < dm.split.count("val") / 780 < 0.2
    with pytest.raises(DataError, match="data.fold=5"):
        kfold_train_val(dm.split, [0] * 780, dm.groups, 5, 5)


def test_make_split_keeps_groups_together():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200).tolist()
    groups = (np.arange(200) // 3).tolist()  # groups of three
    split = make_split(labels, groups, 0.1, 0.2, seed=1)
    for g in set(groups):
        assert len({split[i] for i in range(200) if groups[i] == g}) == 1
    assert make_split(labels, groups, 0.1, 0.2, seed=1) == split  # deterministic


def test_a_split_without_a_test_side():
    """test_fraction=0 (a new site's cases for medmtl-adapt): train and val only, groups kept
    together, val about its fraction; a negative fraction is still refused."""
    labels = [0, 1, 2] * 20
    groups = [i // 2 for i in range(60)]
    split = make_split(labels, groups, val_fraction=0.4, test_fraction=0.0, seed=3)
    assert set(split) == {"train", "val"} and 0.3 <= split.count("val") / 60 <= 0.5
    for g in set(groups):
        assert len({s for s, gg in zip(split, groups, strict=True) if gg == g}) == 1
    with pytest.raises(DataError, match="test_fraction in \\[0, 1\\)"):
        make_split(labels, groups, val_fraction=0.4, test_fraction=-0.1)


def test_find_groups_is_transitive_and_thresholded():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    b = a + 0.01 * rng.random((32, 32))
    c = b + 0.01 * rng.random((32, 32))
    d = rng.random((32, 32))
    groups = find_groups([a, b, c, d], 0.95)
    assert groups.group_of[0] == groups.group_of[1] == groups.group_of[2] != groups.group_of[3]
    assert find_groups([a, d], 0.95).members() == {}


def test_too_small_class_is_a_clear_error():
    with pytest.raises(DataError, match="a class has only 3 image"):
        make_split([0] * 3 + [1] * 40, list(range(43)), 0.1, 0.2)

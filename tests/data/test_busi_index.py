"""BUSI is read correctly: counts, merged masks, mask encodings, grey images."""

from __future__ import annotations

import numpy as np

from medmtl.data.index import index_class_folders
from medmtl.io.image import read_grey, read_mask

CLASSES = ("normal", "benign", "malignant")


def test_busi_counts_and_multi_masks(busi):
    index = index_class_folders(busi, CLASSES)
    assert index.counts() == {"normal": 133, "benign": 437, "malignant": 210}
    multi = [c for c in index.cases if len(c.masks) > 1]
    assert len(multi) == 17
    three = [c.case_id for c in index.cases if len(c.masks) == 3]
    assert three == ["benign/benign (195).png"]
    assert not index.ignored_files and not index.problems


def test_busi_normal_masks_are_empty_and_lesion_masks_are_not(busi):
    index = index_class_folders(busi, CLASSES)
    normal = [c for c in index.cases if c.class_name == "normal"]
    assert sum(not read_mask(c.masks[0]).any() for c in normal) == 133
    benign_1 = next(c for c in index.cases if c.case_id == "benign/benign (1).png")
    assert read_mask(benign_1.masks[0]).any()


def test_rgba_mask_and_or_merge(busi):
    # benign (4) has an 1-bit _mask and an RGBA _mask_1: both count, merged with OR
    m0 = read_mask(busi / "benign" / "benign (4)_mask.png")
    m1 = read_mask(busi / "benign" / "benign (4)_mask_1.png")
    assert m0.dtype == bool and m1.dtype == bool and m0.shape == m1.shape
    assert m1.any() and m0.any()
    merged = m0 | m1
    assert merged.sum() > max(m0.sum(), m1.sum())


def test_rgb_image_read_as_grey(busi):
    img = read_grey(busi / "benign" / "benign (1).png")
    assert img.ndim == 2 and img.dtype == np.uint8

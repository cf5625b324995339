"""Lesions as instances: each mask file's parts stay apart, on the file grid and the model's."""

from __future__ import annotations

import numpy as np
import pytest

from medmtl.data.cache import (
    MAX_LESIONS,
    lesion_labels,
    load_case,
    read_case,
    resize_lesions,
    resize_mask,
)
from medmtl.errors import DataError
from medmtl.metrics import components, lesion_counts


def _square(shape, rows, cols) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[rows, cols] = True
    return m


def test_touching_masks_stay_two_lesions_and_their_union_is_the_mask():
    a = _square((40, 40), slice(5, 20), slice(5, 20))
    b = _square((40, 40), slice(5, 20), slice(19, 30))  # shares a column with a
    labels = lesion_labels([a, b])
    assert components(a | b).max() == 1  # merged, they would be one lesion
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]
    np.testing.assert_array_equal(labels > 0, a | b)
    # the shared column goes to the smaller lesion (b: 165 px against a's 225)
    assert (labels[5:20, 19] == 2).all() and (labels[5:20, 5:19] == 1).all()


def test_a_lesion_inside_another_stays_a_lesion_and_a_two_part_mask_is_two():
    outer = _square((40, 40), slice(2, 30), slice(2, 30))
    inner = _square((40, 40), slice(10, 14), slice(10, 14))  # wholly inside outer
    labels = lesion_labels([outer, inner])
    assert (labels == 2).sum() == 16 and (labels == 1).sum() == 28 * 28 - 16
    corner = _square((40, 40), slice(30, 34), slice(30, 34))
    two = _square((40, 40), slice(0, 4), slice(0, 4)) | corner
    assert lesion_labels([two]).max() == 2
    assert lesion_labels([]).shape == (0, 0)


def test_too_many_lesions_is_a_data_error_naming_the_file():
    speckle = np.zeros((64, 64), dtype=bool)
    speckle[::2, ::2] = True  # 1024 single pixels
    with pytest.raises(DataError, match=f"noise_mask.png: more than {MAX_LESIONS} separate"):
        lesion_labels([speckle], ["noise_mask.png"])


def test_resized_labels_keep_the_union_and_each_lesion():
    a = _square((200, 200), slice(20, 100), slice(20, 100))
    b = _square((200, 200), slice(20, 100), slice(100, 140))
    labels = lesion_labels([a, b])
    small = resize_lesions(labels, 64)
    assert small.dtype == np.uint8
    np.testing.assert_array_equal(small > 0, resize_mask(a | b, 64))  # the same training mask
    assert sorted(np.unique(small).tolist()) == [0, 1, 2]
    assert not resize_lesions(np.zeros((50, 50), np.uint8), 32).any()
    # counted as two lesions, both found by a mask covering both
    row = lesion_counts(small, small > 0)
    assert row[0] == 2 and row[1] == 2 and row[2] == 0


def test_a_busi_image_with_two_touching_masks_keeps_two_lesions(busi):
    """benign (181): two mask files whose lesions touch (7 shared pixels); merged, they were one
    lesion. On the file grid and on the model's 256 px grid they stay two."""
    from medmtl.data.index import index_class_folders
    from medmtl.preprocess.pipeline import PreprocessSettings

    (case,) = [
        c
        for c in index_class_folders(busi, ("normal", "benign", "malignant"), ("normal",)).cases
        if c.image.name == "benign (181).png"
    ]
    assert len(case.masks) == 2
    _, labels, _ = read_case(case)
    assert components(labels > 0).max() == 1
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]
    cached = load_case(case, PreprocessSettings(image_size=256))
    assert sorted(np.unique(cached.lesions).tolist()) == [0, 1, 2]
    assert cached.mask.dtype == bool and cached.mask.sum() == (cached.lesions > 0).sum()


def test_a_lesion_lost_on_the_model_grid_is_named_in_a_warning(tmp_path, caplog):
    from PIL import Image

    from medmtl.data.index import Case
    from medmtl.preprocess.pipeline import PreprocessSettings

    mask = np.zeros((200, 200), np.uint8)
    mask[20:120, 20:120] = 255
    mask[180, 180] = 255  # one pixel: less than half a pixel of a 32 px grid
    Image.fromarray(np.full((200, 200), 80, np.uint8)).save(tmp_path / "b.png")
    Image.fromarray(mask).save(tmp_path / "b_mask.png")
    case = Case("b.png", tmp_path / "b.png", (tmp_path / "b_mask.png",), 1, "benign")
    with caplog.at_level("WARNING", logger="medmtl.data.cache"):
        cached = load_case(case, PreprocessSettings(image_size=32))
    assert sorted(np.unique(cached.lesions).tolist()) == [0, 1]
    assert "b.png: 1 lesion(s) smaller than half a pixel" in caplog.text
    assert "(areas 1 px on the original)" in caplog.text
    np.testing.assert_allclose(cached.lesion_area_px, [10000, 1])

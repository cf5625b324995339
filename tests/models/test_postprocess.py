"""Mask post-processing on constructed masks whose answer is known."""

from __future__ import annotations

import numpy as np

from medmtl.models.postprocess import PostProcess


def _mask() -> np.ndarray:
    m = np.zeros((40, 40), bool)
    m[5:25, 5:25] = True  # the lesion (400 px) ...
    m[12:16, 12:16] = False  # ... with a 16-px hole
    m[30:33, 30:33] = True  # a 9-px speck
    m[2, 38] = True  # a 1-px speck
    return m


def test_off_changes_nothing():
    m = _mask()
    assert np.array_equal(PostProcess()(m), m) and not PostProcess().active


def test_largest_component_keeps_only_the_lesion():
    out = PostProcess(largest_component=True)(_mask())
    assert out.sum() == 400 - 16 and not out[30:33, 30:33].any() and not out[2, 38]
    assert not out[12:16, 12:16].any()  # the hole stays without fill_holes


def test_fill_holes():
    out = PostProcess(fill_holes=True)(_mask())
    assert out[12:16, 12:16].all() and out.sum() == 400 + 9 + 1


def test_both_and_min_area():
    both = PostProcess(largest_component=True, fill_holes=True)(_mask())
    assert both.sum() == 400 and both[5:25, 5:25].all()
    small = PostProcess(min_area=5)(_mask())
    assert small[30:33, 30:33].all() and not small[2, 38]


def test_diagonal_pixels_are_one_lesion_and_empty_stays_empty():
    m = np.zeros((10, 10), bool)
    m[2, 2] = m[3, 3] = m[4, 4] = True  # touching at corners
    m[8, 0] = True
    out = PostProcess(largest_component=True)(m)
    assert out.sum() == 3 and not out[8, 0]
    assert not PostProcess(largest_component=True, fill_holes=True)(np.zeros((5, 5))).any()


def test_round_trip_of_the_settings():
    p = PostProcess(largest_component=True, min_area=7)
    assert PostProcess.from_dict(p.to_dict()) == p and PostProcess.from_dict(None) == PostProcess()

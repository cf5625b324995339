"""Conversion to 8-bit, statistics, HE and CLAHE against hand-checked values and OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from medmtl.preprocess.intensity import (
    apply_clahe,
    cdf,
    clip_histogram,
    equalize_hist,
    histogram,
    infer_max_value,
    intensity_stats,
    to_uint8,
)


def test_full_range_conversion():
    img = np.array([[0, 1000, 2000]], dtype=np.uint16)
    assert to_uint8(img, "full").tolist() == [[0, 128, 255]]  # 127.5 rounds to even 128
    u8 = np.array([[3, 7]], dtype=np.uint8)
    assert to_uint8(u8) is u8  # 8-bit input is not stretched
    assert to_uint8(np.full((2, 2), 5.0)).tolist() == [[0, 0], [0, 0]]


def test_window_conversion_dicom_formula():
    hu = np.array([[-200.0, -160.0, 40.0, 239.0, 300.0]])
    # centre 40, width 400: lower edge 40-0.5-199.5 = -160, upper edge 40-0.5+199.5 = 239
    assert to_uint8(hu, "window", center=40, width=400).tolist() == [[0, 0, 128, 255, 255]]
    with pytest.raises(ValueError, match="needs center and width"):
        to_uint8(hu, "window")


def test_percentile_conversion():
    img = np.arange(101, dtype=np.float64).reshape(1, -1)
    out = to_uint8(img, "percentile", low=10, high=90)
    assert out[0, 10] == 0 and out[0, 90] == 255 and out[0, 50] == 128
    assert out[0, 0] == 0 and out[0, 100] == 255
    with pytest.raises(ValueError, match="unknown conversion"):
        to_uint8(img, "log")


def test_intensity_stats_and_histogram():
    img = np.array([[0, 10], [20, 30]], dtype=np.uint8)
    st = intensity_stats(img)
    assert st.brightness == 15 and st.contrast_range == 30
    assert st.contrast_std == pytest.approx(np.std([0, 10, 20, 30]))
    counts, edges = histogram(img)
    assert counts.sum() == 4 and counts[10] == 1 and edges[0] == 0 and len(counts) == 256
    c = cdf(counts)
    assert c[-1] == 1.0 and c[9] == 0.25
    img16 = np.array([[0, 4095]], dtype=np.uint16)
    assert intensity_stats(img16).contrast_range == 4095
    assert histogram(img16)[0].sum() == 2
    assert infer_max_value(img16) == 4095


@pytest.mark.parametrize("seed", range(5))
def test_he_matches_opencv_on_uint8(seed):
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(90, 25 + 10 * seed, (47, 61)), 0, 255).astype(np.uint8)
    assert np.array_equal(equalize_hist(img, backend="numpy"), cv2.equalizeHist(img))


def test_he_special_cases_match_opencv():
    const = np.full((8, 8), 77, np.uint8)
    two = np.zeros((8, 8), np.uint8)
    two[:, 4:] = 200
    for img in (const, two):
        assert np.array_equal(equalize_hist(img, backend="numpy"), cv2.equalizeHist(img))


def test_he_cdf_is_close_to_linear():
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 256, (200, 200)).astype(np.uint8), (0, 0), 2)
    eq = equalize_hist(img)
    c = cdf(np.bincount(eq.ravel(), minlength=256))
    levels = np.flatnonzero(np.bincount(eq.ravel(), minlength=256))
    assert np.abs(c[levels] - levels / 255).max() < 0.05


def test_he_on_16bit_keeps_its_bit_depth():
    rng = np.random.default_rng(2)
    smooth = cv2.GaussianBlur(rng.random((120, 120)), (0, 0), 3)
    img = ((smooth - smooth.min()) / np.ptp(smooth) * 3900 + 100).astype(np.uint16)  # 12-bit
    eq = equalize_hist(img)
    assert eq.dtype == np.uint16 and eq.min() == 0 and eq.max() == 4095  # 12-bit data stays 12-bit
    counts = np.bincount(eq.ravel(), minlength=4096)
    levels = np.flatnonzero(counts)
    assert np.abs(cdf(counts)[levels] - levels / 4095).max() < 0.05


def test_clip_histogram_respects_the_limit_and_keeps_the_mass():
    hist = np.array([0, 50, 3, 3, 0, 0, 0, 40])
    clipped, redistributed = clip_histogram(hist, limit=10)
    assert clipped.max() <= 10 and clipped.tolist() == [0, 10, 3, 3, 0, 0, 0, 10]
    assert redistributed.sum() == hist.sum()
    excess = 70
    assert redistributed.max() <= 10 + excess // 8 + 1


def test_clahe_tiles_respect_the_clip_limit():
    # a constructed tile: all 16 px of a 4x4 tile at one level; clip 2.0 with 4 bins -> limit 8
    img = np.zeros((4, 4), np.uint8)
    hist = np.bincount((img.ravel().astype(int) * 4) // 256, minlength=4)
    clipped, _ = clip_histogram(hist, limit=max(int(2.0 * 16 / 4), 1))
    assert clipped.max() == 8


def _halves() -> np.ndarray:
    rng = np.random.default_rng(3)
    img = np.empty((128, 128), np.uint8)
    img[:, :64] = np.clip(rng.normal(40, 8, (128, 64)), 0, 255)
    img[:, 64:] = np.clip(rng.normal(200, 8, (128, 64)), 0, 255)
    return img


def test_clahe_differs_from_he_on_dark_and_bright_halves():
    img = _halves()
    he = equalize_hist(img)
    cl = apply_clahe(img, clip_limit=2.0, tile_grid_size=4)
    assert np.abs(he.astype(int) - cl.astype(int)).mean() > 10
    # CLAHE spreads the dark half locally; HE squeezes each half into its own half of the range
    assert cl[:, :64].std() > img[:, :64].std() and he[:, :64].max() < 128 <= he[:, 64:].min()


def test_numpy_clahe_matches_opencv_on_uint8():
    img = _halves()
    ref = apply_clahe(img, 2.0, 4)
    ours = apply_clahe(img, 2.0, 4, backend="numpy")
    assert np.abs(ref.astype(int) - ours.astype(int)).mean() < 1.0


def test_clahe_uint16_keeps_range_and_agrees_with_uint8():
    img8 = _halves()
    img16 = img8.astype(np.uint16) * 16  # 12-bit data in 16 bits
    out16 = apply_clahe(img16, 2.0, 4, bins=256)  # same bin width as 8-bit
    assert out16.dtype == np.uint16 and out16.max() <= 4095
    out8 = apply_clahe(img8, 2.0, 4)
    assert np.abs(out16 / 16.0 - out8).mean() < 1.5

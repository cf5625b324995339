"""The phantom is deterministic and carries the sonographic cues each class is defined by."""

from __future__ import annotations

import numpy as np
import pytest

from medmtl.data.phantom import ensure_phantom, generate_image


def _box(mask: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


def test_deterministic_from_seed():
    a, ma = generate_image(3, 7, "malignant", 96)
    b, mb = generate_image(3, 7, "malignant", 96)
    c, _ = generate_image(4, 7, "malignant", 96)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)


def test_normal_has_empty_mask():
    for i in range(5):
        _, m = generate_image(0, i, "normal", 96)
        assert not m.any()


def test_shape_cues():
    benign = [_box(generate_image(0, i, "benign", 128)[1]) for i in range(10)]
    malignant = [_box(generate_image(0, i, "malignant", 128)[1]) for i in range(10)]
    assert all(w > h for w, h in benign)  # wider than tall
    assert np.mean([h / w for w, h in malignant]) > 1.0  # taller than wide on average


def _posterior_ratio(img: np.ndarray, mask: np.ndarray) -> float:
    """Mean grey level below the lesion relative to the same depth beside it."""
    ys, xs = np.nonzero(mask)
    y0, y1 = ys.max() + 3, min(img.shape[0], ys.max() + 25)
    x0, x1 = xs.min() + (xs.max() - xs.min()) // 4, xs.max() - (xs.max() - xs.min()) // 4
    below = img[y0:y1, x0:x1].mean()
    side = np.concatenate(
        [img[y0:y1, : max(1, xs.min() - 5)], img[y0:y1, xs.max() + 5 :]], axis=1
    ).mean()
    return below / side


def test_hypoechoic_lesions_with_posterior_enhancement_or_shadowing():
    enh = [_posterior_ratio(*generate_image(0, i, "benign", 128)) for i in range(8)]
    sha = [_posterior_ratio(*generate_image(0, i, "malignant", 128)) for i in range(8)]
    assert np.median(enh) > 1.05 and np.median(sha) < 0.85
    img, m = generate_image(0, 1, "benign", 128)
    assert img[m].mean() < 0.6 * img[~m].mean()


def test_ensure_phantom_writes_once_in_busi_layout(tmp_path):
    root = ensure_phantom(
        tmp_path, seed=1, counts={"normal": 2, "benign": 2, "malignant": 1}, size=64
    )
    assert sorted(p.name for p in (root / "benign").iterdir()) == [
        "benign (1).png",
        "benign (1)_mask.png",
        "benign (2).png",
        "benign (2)_mask.png",
    ]
    stamp = (root / "phantom.json").stat().st_mtime_ns
    assert (
        ensure_phantom(tmp_path, seed=1, counts={"normal": 2, "benign": 2, "malignant": 1}, size=64)
        == root
    )
    assert (root / "phantom.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="unknown phantom classes"):
        ensure_phantom(tmp_path, counts={"cyst": 1})

"""The boundary metrics against MONAI's implementations (integration tier: MONAI takes seconds
to import, which is why medmtl computes them with scipy)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from medmtl.metrics import NSD_TOLERANCE, boundary_metrics


def _one_hot(mask: np.ndarray):
    import torch

    return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))


def _shapes(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A true ellipse-ish lesion and a shifted, dented prediction, one touching the border."""
    yy, xx = np.mgrid[:side, :side]
    cy, cx = rng.integers(side // 4, 3 * side // 4, 2)
    ry, rx = rng.integers(side // 10, side // 3, 2)
    truth = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    dy, dx = rng.integers(-6, 7, 2)
    pred = np.roll(truth, (dy, dx), axis=(0, 1))
    pred[cy : cy + 4, :] = False  # a dent
    pred[: rng.integers(0, 6), :] |= rng.random() < 0.5  # sometimes a band along the border
    return truth, pred


@pytest.mark.parametrize("seed", range(6))
def test_hd95_and_nsd_equal_monais(seed):
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    side = 64 if seed % 2 else 96
    truth, pred = _shapes(np.random.default_rng(seed), side)
    hd95, nsd = boundary_metrics(truth, pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want_hd = compute_hausdorff_distance(
            _one_hot(pred), _one_hot(truth), include_background=False, percentile=95
        )
        want_nsd = compute_surface_dice(
            _one_hot(pred), _one_hot(truth), class_thresholds=[NSD_TOLERANCE * side],
            include_background=False,
        )  # fmt: skip
    assert hd95 == pytest.approx(float(want_hd), rel=1e-6)
    assert nsd == pytest.approx(float(want_nsd), rel=1e-6)


def test_boundary_metrics_of_the_edge_cases():
    truth = np.zeros((50, 50), dtype=bool)
    truth[10:30, 10:30] = True
    assert boundary_metrics(truth, truth) == (0.0, 1.0)
    hd, nsd = boundary_metrics(truth, np.zeros_like(truth))
    assert np.isnan(hd) and nsd == 0.0  # a missed lesion: no boundary to measure, NSD 0
    assert all(np.isnan(boundary_metrics(np.zeros_like(truth), truth)))  # a normal image
    shifted = np.roll(truth, 3, axis=1)
    hd, nsd = boundary_metrics(truth, shifted)
    assert hd == 3.0 and 0 < nsd < 1

"""Domain-robustness inputs: ultrasound-physics augmentation and per-image standardisation."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from medmtl.data.transforms import DepthGain, depth_gain_curve, eval_transform, train_transform
from medmtl.preprocess.pipeline import PreprocessSettings, standardize_image


def _scan(seed: int = 0, side: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(60, 180, (side, side), dtype=np.uint8)


@pytest.mark.parametrize("slope", [-0.5, -0.2, 0.3, 0.5])
def test_depth_gain_is_monotone_in_depth_with_mean_one(slope):
    curve = depth_gain_curve(100, slope)
    steps = np.diff(curve)
    assert (steps > 0).all() if slope > 0 else (steps < 0).all()
    assert curve.mean() == pytest.approx(1.0, abs=1e-6)
    # on a flat image every row is its gain times the grey level (the skin line at the top)
    flat = np.full((100, 40), 100, np.uint8)
    out = DepthGain(limit=0.5, p=1.0).apply(flat, slope=slope)
    assert np.array_equal(out[:, 0], np.clip(np.rint(100 * curve), 0, 255).astype(np.uint8))
    assert (out == out[:, :1]).all()  # constant across each row


def test_depth_gain_draws_slopes_within_its_limit():
    t = DepthGain(limit=0.3, p=1.0)
    slopes = [t.get_params()["slope"] for _ in range(200)]
    assert max(slopes) <= 0.3 and min(slopes) >= -0.3 and np.std(slopes) > 0.1


def test_speckle_preserves_the_mean_and_varies_pixels():
    t = A.Compose([A.MultiplicativeNoise(multiplier=(0.8, 1.2), elementwise=True, p=1.0)])
    flat = np.full((128, 128), 100, np.uint8)
    out = t(image=flat)["image"].astype(np.float64)
    assert out.mean() == pytest.approx(100, rel=0.01) and out.std() > 5


def test_blur_and_resolution_loss_smooth_but_keep_the_mean():
    img = _scan()
    for kw in ({"blur": 1.0}, {"downscale": 1.0, "downscale_min": 0.5}):
        t = train_transform(64, hflip=0, affine=0, brightness_contrast=0, **kw)
        out = t(image=img, mask=np.zeros_like(img))["image"].numpy()[0]
        plain = eval_transform()(image=img)["image"].numpy()[0]
        assert out.std() < plain.std() * 0.8, kw
        assert out.mean() == pytest.approx(plain.mean(), abs=0.05), kw


def test_standardization_is_the_same_in_training_evaluation_and_prediction():
    img = _scan(1)
    settings = PreprocessSettings(image_size=64, standardize=True)
    by_settings = settings.normalize(img)
    by_eval = eval_transform(settings.mean, settings.std, standardize=True)(image=img)["image"]
    assert np.array_equal(by_settings, by_eval.numpy()[0])
    assert by_settings.mean() == pytest.approx(0, abs=1e-5)
    assert by_settings.std() == pytest.approx(1, abs=1e-4)
    # a darker, flatter scanner gives the same network input (up to rounding to 8 bits)
    other = np.rint(0.5 * img.astype(np.float64) + 20).astype(np.uint8)
    assert np.abs(standardize_image(other) - by_settings).max() < 0.05
    assert not np.allclose(
        PreprocessSettings().normalize(other), PreprocessSettings().normalize(img)
    )
    # stored with the model and read back, and a flat image stays finite
    assert PreprocessSettings.from_dict(settings.to_dict()).standardize is True
    assert np.isfinite(standardize_image(np.full((8, 8), 7, np.uint8))).all()

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


def test_amplitude_mix_keeps_the_phase_and_mixes_the_amplitudes():
    """FACT amplitude mixing: each chosen image keeps its Fourier phase and takes
    (1 - lam) of its amplitude plus lam of another image's; p=0 and a batch of one stay."""
    import torch

    from medmtl.data.transforms import amplitude_mix

    torch.manual_seed(0)
    x = torch.stack([torch.from_numpy(_scan(s, 32)).float()[None] / 255 for s in range(4)])
    x[1] = x[1] * 0.3 + 0.5  # another contrast: a different amplitude spectrum
    assert torch.equal(amplitude_mix(x, 0.0), x) and torch.equal(amplitude_mix(x[:1], 1.0), x[:1])
    g = torch.Generator().manual_seed(1)
    out = amplitude_mix(x, 1.0, ratio=1.0, generator=g)
    assert out.shape == x.shape and not torch.allclose(out, x)
    # replay the draws: each output is (1-lam)|X_i| + lam|X_j| with X_i's phase
    g = torch.Generator().manual_seed(1)
    torch.rand(4, generator=g)
    partner = (torch.arange(4) + torch.randint(1, 4, (4,), generator=g)) % 4
    lam = torch.rand(4, generator=g)
    assert (partner != torch.arange(4)).all()
    spec, got = torch.fft.fft2(x), torch.fft.fft2(out)
    for i in range(4):
        want = (1 - lam[i]) * spec[i].abs() + lam[i] * spec[partner[i]].abs()
        assert torch.allclose(got[i].abs(), want, atol=1e-3)
        big = want > 1e-2  # the phase is defined where there is amplitude
        dphase = torch.angle(got[i][big] * spec[i][big].conj())
        assert dphase.abs().max() < 1e-3
    # ratio bounds lam: ratio 0 changes nothing
    assert torch.allclose(amplitude_mix(x, 1.0, ratio=0.0), x, atol=1e-5)


def test_amplitude_mix_reaches_the_training_step(make_cfg, monkeypatch):
    """data.augment.amplitude_mix mixes every training batch (not one image in albumentations,
    which would refuse the key), with the configured probability and ratio."""
    import medmtl.training.module as module
    from medmtl.workflows.train import train
    from tests.conftest import TINY_MODEL, TINY_PHANTOM

    calls = []
    real = module.amplitude_mix

    def spy(images, p, ratio=1.0, generator=None):
        calls.append((tuple(images.shape), p, ratio))
        return real(images, p, ratio, generator)

    monkeypatch.setattr(module, "amplitude_mix", spy)
    overrides = ["debug=fast_dev_run", "data.augment.amplitude_mix=0.5"]
    overrides.append("data.augment.amplitude_mix_ratio=0.3")
    train(make_cfg(TINY_PHANTOM + TINY_MODEL + overrides))
    assert calls and all(c[1:] == (0.5, 0.3) for c in calls)
    assert calls[0][0][0] > 1  # a batch of images


def test_lesion_crop_zooms_onto_the_lesion():
    """data.augment.lesion_crop: the crop always holds lesion pixels and enlarges the lesion;
    on a lesion-free image it is an ordinary zoom."""
    image = _scan(3, 64)
    mask = np.zeros((64, 64), np.uint8)
    mask[2:6, 56:62] = 1  # a small lesion in a corner: a random crop of 60 % would often miss it
    tf = train_transform(64, lesion_crop=1.0, lesion_crop_side=0.5, hflip=0, affine=0,
                         brightness_contrast=0)  # fmt: skip
    areas = []
    for seed in range(20):
        tf.set_random_seed(seed)
        out = tf(image=image, mask=mask)
        assert out["image"].shape[-2:] == (64, 64)
        areas.append(int(np.asarray(out["mask"]).sum()))
    assert min(areas) > 0  # the lesion is never cropped away
    assert np.mean(areas) > 2 * mask.sum()  # half the side: up to four times the area
    out = tf(image=image, mask=np.zeros_like(mask))
    assert int(np.asarray(out["mask"]).sum()) == 0

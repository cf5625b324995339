"""Random (train) and deterministic (eval) albumentations pipelines on the cached arrays."""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from medmtl.preprocess.pipeline import GREY_MEAN, GREY_STD, standardize_image
from medmtl.settings.data import Augment


class Standardize(A.ImageOnlyTransform):
    """Per-image standardisation (:func:`medmtl.preprocess.pipeline.standardize_image`), so
    training, evaluation and prediction compute the same numbers."""

    def __init__(self, p: float = 1.0):
        super().__init__(p=p)

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        return standardize_image(img)


class DepthGain(A.ImageOnlyTransform):
    """A random time-gain-compensation curve: each row (depth) multiplied by a gain that
    rises or falls linearly with depth, ``1 + s * depth`` with ``s`` in ±``limit`` and the
    mean gain over the depth 1 (another scanner's or operator's TGC setting)."""

    def __init__(self, limit: float = 0.5, p: float = 0.5):
        super().__init__(p=p)
        self.limit = float(limit)

    def get_params(self) -> dict:
        return {"slope": float(self.py_random.uniform(-self.limit, self.limit))}

    def apply(self, img: np.ndarray, slope: float = 0.0, **params) -> np.ndarray:
        gain = depth_gain_curve(img.shape[0], slope)
        shape = (-1,) + (1,) * (img.ndim - 1)
        out = img.astype(np.float32) * gain.reshape(shape)
        return np.clip(np.rint(out), 0, 255).astype(img.dtype)


# augmentations of a whole training batch (the module's training step), not of one image
BATCH_AUGMENTS = ("amplitude_mix", "amplitude_mix_ratio")


def amplitude_mix(
    images: torch.Tensor, p: float, ratio: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Frequency-amplitude mixing between the images of a batch (FACT, Xu et al., 2021): with
    probability ``p`` an image keeps its Fourier phase (where the structures are) and takes
    ``(1 - lam) * its amplitude + lam * another image's``, ``lam`` uniform in [0, ``ratio``]:
    another image's texture, contrast and speckle statistics on the same anatomy; masks and
    labels stay. (B, C, H, W) in, the same shape out; a batch of one is returned as it is."""
    b = images.shape[0]
    if p <= 0 or b < 2:
        return images
    x = images.float()
    chosen = torch.rand(b, generator=generator) < p
    if not chosen.any():
        return images
    # a partner for each image that is never itself: a random non-zero shift of the indices
    shift = torch.randint(1, b, (b,), generator=generator)
    partner = (torch.arange(b) + shift) % b
    lam = torch.rand(b, generator=generator) * float(ratio) * chosen
    spec = torch.fft.fft2(x)
    amp, phase = spec.abs(), spec.angle()
    lam = lam.view(b, *([1] * (x.ndim - 1))).to(x.device)
    mixed = (1 - lam) * amp + lam * amp[partner.to(x.device)]
    out = torch.fft.ifft2(torch.polar(mixed, phase)).real
    return out.to(images.dtype)


def depth_gain_curve(height: int, slope: float) -> np.ndarray:
    """The gain of each row of :class:`DepthGain`: linear in depth, mean 1, monotone."""
    depth = np.linspace(0.0, 1.0, height, dtype=np.float32)
    return (1.0 + slope * depth) / (1.0 + slope / 2.0)


def normalize(mean: float, std: float, standardize: bool = False) -> list:
    """(x / 255 - mean) / std, as :meth:`PreprocessSettings.normalize` (or the per-image
    standardisation), then a tensor."""
    first = Standardize() if standardize else A.Normalize(mean=mean, std=std, max_pixel_value=255.0)
    return [first, ToTensorV2()]


def raw_transform() -> A.Compose:
    """The cached 8-bit image as a tensor, unaugmented and unnormalised (0..255): for
    ``data.augment_on=device``, which does both on the device (:mod:`.device_augment`)."""
    return A.Compose([ToTensorV2()])


def eval_transform(
    mean: float = GREY_MEAN, std: float = GREY_STD, standardize: bool = False
) -> A.Compose:
    """Deterministic part only (images are already resized in the cache)."""
    return A.Compose(normalize(mean, std, standardize))


def train_transform(
    size: int,
    mean: float = GREY_MEAN,
    std: float = GREY_STD,
    standardize: bool = False,
    **augment: Any,
) -> A.Compose:
    """Random augmentation. No vertical flip by default: the skin line is at the top of a scan.

    ``crop``: a random crop of ``crop_scale``..100 % of the image area, resized back (zoom, so
    that a lesion fills more or less of the frame, as on other scanners); ``speckle``:
    multiplicative per-pixel noise of up to ±``speckle_limit`` (ultrasound speckle); ``gamma``:
    a random gamma (gain curve) of 0.8..1.2; ``tgc``: a depth-dependent gain (time-gain
    compensation, :class:`DepthGain`); ``blur``: Gaussian blur of up to ``blur_limit`` pixels;
    ``downscale``: resolution loss, down to ``downscale_min`` of the side and back (other
    probes and frequencies); ``lesion_crop``: a square of ``lesion_crop_side`` of the side that
    holds lesion pixels (any square on a lesion-free image), resized back: lesion-centred zoom.
    ``augment``: the ``data.augment`` settings (:class:`~medmtl.settings.data.Augment`, whose
    defaults apply; the batch-level ones, :data:`BATCH_AUGMENTS`, are not used here).
    """
    a = Augment.from_dict(augment)
    ops: list = []
    if a.lesion_crop > 0:
        side = max(1, min(size, int(round(a.lesion_crop_side * size))))
        ops.append(
            A.Sequential(
                [A.CropNonEmptyMaskIfExists(height=side, width=side), A.Resize(size, size)],
                p=a.lesion_crop,
            )
        )
    if a.crop > 0:
        ops.append(
            A.RandomResizedCrop(
                size=(size, size), scale=(a.crop_scale, 1.0), ratio=(0.75, 1.333), p=a.crop
            )
        )
    if a.hflip > 0:
        ops.append(A.HorizontalFlip(p=a.hflip))
    if a.vflip > 0:
        ops.append(A.VerticalFlip(p=a.vflip))
    if a.affine > 0:
        ops.append(
            A.Affine(
                scale=(1 - a.scale, 1 + a.scale),
                translate_percent=(-a.translate, a.translate),
                rotate=(-a.rotate, a.rotate),
                border_mode=cv2.BORDER_CONSTANT,
                p=a.affine,
            )
        )
    if a.clahe > 0:
        ops.append(A.CLAHE(clip_limit=(1.0, a.clahe_clip_limit), p=a.clahe))
    if a.brightness_contrast > 0:
        ops.append(
            A.RandomBrightnessContrast(
                brightness_limit=a.brightness_limit,
                contrast_limit=a.contrast_limit,
                p=a.brightness_contrast,
            )
        )
    if a.gamma > 0:
        ops.append(A.RandomGamma(gamma_limit=(80, 120), p=a.gamma))
    if a.tgc > 0:
        ops.append(DepthGain(limit=a.tgc_limit, p=a.tgc))
    if a.blur > 0:
        ops.append(A.GaussianBlur(blur_limit=(3, max(3, int(a.blur_limit) | 1)), p=a.blur))
    if a.downscale > 0:
        ops.append(
            A.Downscale(
                scale_range=(a.downscale_min, 0.9),
                # area down and linear up: lost detail, not blocks of pixels
                interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR},
                p=a.downscale,
            )
        )
    if a.speckle > 0:
        ops.append(
            A.MultiplicativeNoise(
                multiplier=(1 - a.speckle_limit, 1 + a.speckle_limit), elementwise=True, p=a.speckle
            )
        )
    return A.Compose(ops + normalize(mean, std, standardize))

"""The training augmentation on the device that trains (``data.augment_on=device``).

On a GPU node the loader workers' per-image augmentation is what the GPU waits for; here the
workers only collate the cached 8-bit images, and the whole batch is flipped, warped and
brightened on the GPU after its transfer (:meth:`CasesDataModule.on_after_batch_transfer`),
then normalised exactly as the eval pipeline does. The transforms are albumentations' own
(:func:`medmtl.data.transforms.train_transform`) with the same parameters and ranges:

- ``hflip``/``vflip``: a mirror image;
- ``affine``: albumentations' matrix (scale, rotation, translation about the pixel centre
  ``(w/2 - 0.5, h/2 - 0.5)``, zero border), warped by kornia (bilinear for the image,
  nearest for the mask);
- ``brightness_contrast``: ``x * (1 + c) + b * 255``, clipped to 0..255.

Augmentations that only exist in the CPU pipeline (CLAHE, crops, gamma, noise, blur, ...) are
refused with ``augment_on=device`` (:func:`medmtl.settings.data.check_device_augment`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from medmtl.settings.data import Augment


@dataclass
class Params:
    """One batch's draw: per image whether each transform applies and its values."""

    hflip: torch.Tensor  # (B,) bool
    vflip: torch.Tensor
    affine: torch.Tensor  # (B,) bool
    scale: torch.Tensor  # (B,)
    angle: torch.Tensor  # degrees
    shift: torch.Tensor  # (B, 2) whole pixels, x and y
    light: torch.Tensor  # (B,) bool
    alpha: torch.Tensor  # contrast factor
    beta: torch.Tensor  # brightness offset in grey levels


def draw(
    augment: Augment, batch: int, size: tuple[int, int], generator: torch.Generator | None = None
) -> Params:
    """Random parameters for ``batch`` images of ``size`` (h, w), with albumentations'
    probabilities and uniform ranges."""

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator)

    def chance(p: float) -> torch.Tensor:
        return torch.rand(batch, generator=generator) < p

    a = augment
    h, w = size
    return Params(
        hflip=chance(a.hflip),
        vflip=chance(a.vflip),
        affine=chance(a.affine),
        scale=uniform(1 - a.scale, 1 + a.scale),
        angle=uniform(-a.rotate, a.rotate),
        # whole pixels, truncated toward zero, as albumentations' translate_percent
        shift=torch.stack(
            [uniform(-a.translate, a.translate) * w, uniform(-a.translate, a.translate) * h], dim=1
        ).trunc(),
        light=chance(a.brightness_contrast),
        alpha=1 + uniform(-a.contrast_limit, a.contrast_limit),
        beta=uniform(-a.brightness_limit, a.brightness_limit) * 255.0,
    )


def affine_matrix(scale: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor,
                  size: tuple[int, int]) -> torch.Tensor:  # fmt: skip
    """(B, 2, 3) forward matrices (source pixel -> output pixel) as albumentations builds them:
    about the centre, scale, then rotate, then translate."""
    h, w = size
    cx, cy = w / 2 - 0.5, h / 2 - 0.5
    rad = angle * (math.pi / 180)
    cos, sin = torch.cos(rad) * scale, torch.sin(rad) * scale
    tx = cx + shift[:, 0] - (cos * cx + sin * cy)
    ty = cy + shift[:, 1] - (-sin * cx + cos * cy)
    return torch.stack([torch.stack([cos, sin, tx], 1), torch.stack([-sin, cos, ty], 1)], 1)


def apply(
    images: torch.Tensor, masks: torch.Tensor, p: Params
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch: ``images`` (B, C, H, W) float in 0..255, ``masks`` (B, 1, H, W); the
    order is albumentations' (flips, affine, brightness/contrast)."""
    from kornia.geometry.transform import warp_affine

    dev = images.device
    x, m = images.float(), masks.float()
    for flag, dim in ((p.hflip, 3), (p.vflip, 2)):
        chosen = flag.to(dev).view(-1, 1, 1, 1)
        x = torch.where(chosen, x.flip(dim), x)
        m = torch.where(chosen, m.flip(dim), m)
    if bool(p.affine.any()):
        size = (x.shape[2], x.shape[3])
        matrix = affine_matrix(p.scale, p.angle, p.shift, size).to(dev, x.dtype)
        chosen = p.affine.to(dev).view(-1, 1, 1, 1)
        warped = warp_affine(x, matrix, size, mode="bilinear", padding_mode="zeros",
                             align_corners=True)  # fmt: skip
        warped_m = warp_affine(m, matrix, size, mode="nearest", padding_mode="zeros",
                               align_corners=True)  # fmt: skip
        x, m = torch.where(chosen, warped, x), torch.where(chosen, warped_m, m)
    if bool(p.light.any()):
        chosen = p.light.to(dev).view(-1, 1, 1, 1)
        alpha = p.alpha.to(dev, x.dtype).view(-1, 1, 1, 1)
        beta = p.beta.to(dev, x.dtype).view(-1, 1, 1, 1)
        x = torch.where(chosen, (x * alpha + beta).clamp(0, 255), x)
    return x, m


def normalise(images: torch.Tensor, mean: float, std: float, standardize: bool) -> torch.Tensor:
    """What the eval pipeline does to 0..255 images: ``(x/255 - mean)/std``, or each image's
    own standardisation (:func:`medmtl.preprocess.pipeline.standardize_image`)."""
    from medmtl.preprocess.pipeline import _MIN_STD

    x = images / 255.0
    if not standardize:
        return (x - mean) / std
    mu = x.mean(dim=(1, 2, 3), keepdim=True)
    sd = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False).clamp_min(_MIN_STD)
    return (x - mu) / sd

"""Random (train) and deterministic (eval) albumentations pipelines on the cached arrays."""

from __future__ import annotations

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from medmtl.preprocess.pipeline import GREY_MEAN, GREY_STD


def normalize(mean: float, std: float) -> list:
    """(x / 255 - mean) / std, as :meth:`PreprocessSettings.normalize`, then a tensor."""
    return [A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()]


def eval_transform(mean: float = GREY_MEAN, std: float = GREY_STD) -> A.Compose:
    """Deterministic part only (images are already resized in the cache)."""
    return A.Compose(normalize(mean, std))


def train_transform(
    size: int,
    mean: float = GREY_MEAN,
    std: float = GREY_STD,
    hflip: float = 0.5,
    vflip: float = 0.0,
    affine: float = 0.5,
    scale: float = 0.1,
    translate: float = 0.05,
    rotate: float = 10.0,
    brightness_contrast: float = 0.5,
    brightness_limit: float = 0.15,
    contrast_limit: float = 0.15,
    clahe: float = 0.0,
    clahe_clip_limit: float = 3.0,
    gamma: float = 0.0,
    crop: float = 0.0,
    crop_scale: float = 0.5,
    speckle: float = 0.0,
    speckle_limit: float = 0.2,
) -> A.Compose:
    """Random augmentation. No vertical flip by default: the skin line is at the top of a scan.

    ``crop``: a random crop of ``crop_scale``..100 % of the image area, resized back (zoom, so
    that a lesion fills more or less of the frame, as on other scanners); ``speckle``:
    multiplicative per-pixel noise of up to ±``speckle_limit`` (ultrasound speckle); ``gamma``:
    a random gamma (gain curve) of 0.8..1.2.
    """
    ops: list = []
    if crop > 0:
        ops.append(
            A.RandomResizedCrop(
                size=(size, size), scale=(crop_scale, 1.0), ratio=(0.75, 1.333), p=crop
            )
        )
    if hflip > 0:
        ops.append(A.HorizontalFlip(p=hflip))
    if vflip > 0:
        ops.append(A.VerticalFlip(p=vflip))
    if affine > 0:
        ops.append(
            A.Affine(
                scale=(1 - scale, 1 + scale),
                translate_percent=(-translate, translate),
                rotate=(-rotate, rotate),
                border_mode=cv2.BORDER_CONSTANT,
                p=affine,
            )
        )
    if clahe > 0:
        ops.append(A.CLAHE(clip_limit=(1.0, clahe_clip_limit), p=clahe))
    if brightness_contrast > 0:
        ops.append(
            A.RandomBrightnessContrast(
                brightness_limit=brightness_limit,
                contrast_limit=contrast_limit,
                p=brightness_contrast,
            )
        )
    if gamma > 0:
        ops.append(A.RandomGamma(gamma_limit=(80, 120), p=gamma))
    if speckle > 0:
        ops.append(
            A.MultiplicativeNoise(
                multiplier=(1 - speckle_limit, 1 + speckle_limit), elementwise=True, p=speckle
            )
        )
    return A.Compose(ops + normalize(mean, std))

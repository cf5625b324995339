"""Random (train) and deterministic (eval) albumentations pipelines on the cached arrays."""

from __future__ import annotations

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from medmtl.preprocess.pipeline import GREY_MEAN, GREY_STD


def normalize() -> list:
    return [A.Normalize(mean=GREY_MEAN, std=GREY_STD, max_pixel_value=255.0), ToTensorV2()]


def eval_transform() -> A.Compose:
    """Deterministic part only (images are already resized in the cache)."""
    return A.Compose(normalize())


def train_transform(
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
) -> A.Compose:
    """Random augmentation. No vertical flip by default: the skin line is at the top of a scan."""
    ops: list = []
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
        ops.append(A.RandomGamma(p=gamma))
    return A.Compose(ops + normalize())

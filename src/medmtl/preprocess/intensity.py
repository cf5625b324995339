"""Intensity conversion and contrast enhancement used by the data pipeline and inference."""

from __future__ import annotations

import cv2
import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Convert an image to uint8 by full-range min-max scaling (uint8 input is returned as is)."""
    if image.dtype == np.uint8:
        return image
    img = image.astype(np.float64)
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.uint8)
    return np.round((img - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def apply_clahe(
    image: np.ndarray, clip_limit: float = 2.0, tile_grid_size: tuple[int, int] | int = 8
) -> np.ndarray:
    """Contrast Limited Adaptive Histogram Equalization of a 2-D uint8 image (OpenCV)."""
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"apply_clahe expects a 2-D uint8 image, got {image.dtype} {image.shape}")
    if isinstance(tile_grid_size, int):
        tile_grid_size = (tile_grid_size, tile_grid_size)
    clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=tuple(tile_grid_size))
    return clahe.apply(image)

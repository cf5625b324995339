"""Size limits of input images: too small to be a scan, or too large to decode safely."""

from __future__ import annotations

import os
from pathlib import Path

from medmtl.errors import DataError

# an image with fewer pixels per side is no scan (and cannot be resized meaningfully)
MIN_IMAGE_SIDE = 16
# a larger image is refused as a bad file: a decompression bomb or a wrong file (20000 x 20000
# PNGs of a few hundred kB exist); raise it with the environment variable below if genuine
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "MEDMTL_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    """The pixel limit per image (``MEDMTL_MAX_IMAGE_PIXELS``, default 100 million)."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value <= 0:
        raise DataError(f"{MAX_PIXELS_ENV}={text!r}: expected a positive number of pixels.")
    return value


def check_pixel_count(path: Path, width: int, height: int, frames: int = 1) -> None:
    """Refuse an image above the pixel limit before it is decoded."""
    limit = max_image_pixels()
    if width * height * max(1, frames) > limit:
        raise DataError(
            f"{path}: {width} x {height} pixels{f' x {frames} frames' if frames > 1 else ''} is "
            f"more than the limit of {limit:,} pixels per image; if the image is genuine, raise "
            f"the limit with the environment variable {MAX_PIXELS_ENV}."
        )

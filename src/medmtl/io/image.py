"""Image and mask reading shared by every data set, the audit and inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medmtl.errors import DataError


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()  # force the decode here so a truncated file fails now, with its name
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot be decoded as an image ({exc}). Replace or remove the file."
        ) from exc
    return img


def read_grey(path: str | Path) -> np.ndarray:
    """Read an image as a 2-D grey array, keeping 16-bit data as uint16.

    Colour images (BUSI stores grey scans as RGB, some with coloured overlays) are converted
    with the ITU-R 601 luma weights, which leaves R=G=B pixels unchanged.
    """
    path = Path(path)
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img)
        if arr.dtype != np.uint16:
            arr = np.clip(arr, 0, 65535).astype(np.uint16)
        return arr
    if img.mode not in ("L", "1"):
        img = img.convert("RGB").convert("L")
    return np.asarray(img.convert("L"), dtype=np.uint8)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as a boolean array (``mask > 0`` on every channel, whatever the encoding).

    Handles 1-bit, grey, RGB and RGBA masks; the alpha channel is ignored.
    """
    path = Path(path)
    img = _open(path)
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., :3] if arr.shape[-1] == 4 else arr
        return np.any(arr > 0, axis=-1)
    return arr > 0

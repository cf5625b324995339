"""Reading images (PNG, JPEG, TIFF, BMP — 8 or 16 bit — and DICOM) into numpy arrays."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medmtl.errors import DataError
from medmtl.io.limits import MAX_PIXELS_ENV, MIN_IMAGE_SIDE, check_pixel_count
from medmtl.io.meta import ImageMeta

DICOM_EXTENSIONS = (".dcm", ".dicom")
# every extension medmtl reads as an image (the data index, predict and preprocess use this list)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", *DICOM_EXTENSIONS)
# ITU-R BT.601 luma, as PIL's "L" conversion uses; R=G=B pixels stay unchanged
LUMA = np.array([0.299, 0.587, 0.114])
# medmtl checks the pixel count itself right after the header is read (check_pixel_count), with
# its own configurable limit and a message naming it; Pillow's fixed guard would pre-empt that
Image.MAX_IMAGE_PIXELS = None


def is_dicom(path: Path) -> bool:
    """DICOM by extension or by the 'DICM' marker after the 128-byte preamble."""
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _open(path: Path) -> Image.Image:
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes). Replace or remove it.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
            check_pixel_count(path, *img.size)
            img.load()  # decode now so a truncated file fails here, with its name
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found.") from exc
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"{path}: refused by Pillow as a decompression bomb ({exc}); if the image is "
            f"genuine, raise the limit with the environment variable {MAX_PIXELS_ENV}."
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot be decoded as an image ({exc}). Replace or remove the file."
        ) from exc
    return img


def _read_pil(path: Path) -> tuple[np.ndarray, ImageMeta]:
    img = _open(path)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img).astype(np.uint16)
        bits = 16
    elif mode == "I":
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise DataError(
                f"{path}: 32-bit integer image with values outside 0..65535 is not supported."
            )
        arr = arr.astype(np.uint16)
        bits = 16
    elif mode in ("1", "L", "P", "LA", "PA"):
        arr = np.asarray(img.convert("L"), dtype=np.uint8)
        bits = 8
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        bits = 32
    else:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        bits = 8
    meta = ImageMeta(
        source=path.name,
        format=(img.format or path.suffix.lstrip(".")).lower(),
        shape=tuple(int(s) for s in arr.shape),
        dtype=str(arr.dtype),
        bits_stored=bits,
        bits_allocated=bits,
        photometric_interpretation="RGB" if arr.ndim == 3 else "MONOCHROME2",
    )
    return arr, meta


def read_image(
    path: str | Path,
    frame: int = 0,
    apply_voi: bool = False,
    crop_us_region: bool | int = False,
) -> tuple[np.ndarray, ImageMeta]:
    """Read an image file and a PHI-free metadata record.

    PNG/JPEG/TIFF/BMP: grey images as uint8 or uint16, colour ones as RGB uint8. DICOM: see
    :func:`medmtl.io.dicom.read_dicom` (``frame``, ``apply_voi`` and ``crop_us_region`` apply to
    DICOM only).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found.")
    if is_dicom(path):
        from medmtl.io.dicom import read_dicom

        arr, meta = read_dicom(
            path, frame=frame, apply_voi=apply_voi, crop_us_region=crop_us_region
        )
    else:
        arr, meta = _read_pil(path)
    if min(arr.shape[:2]) < MIN_IMAGE_SIDE:
        raise DataError(
            f"{path}: the image is only {arr.shape[1]} x {arr.shape[0]} pixels; at least "
            f"{MIN_IMAGE_SIDE} per side are needed. Replace or remove the file."
        )
    return arr, meta


def to_grey(image: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) to grey with luma weights, keeping the integer dtype; 2-D input unchanged."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        grey = image[..., :3].astype(np.float64) @ LUMA
        if np.issubdtype(image.dtype, np.integer):
            info = np.iinfo(image.dtype)
            return np.clip(np.round(grey), info.min, info.max).astype(image.dtype)
        return grey
    raise DataError(f"unsupported image shape {image.shape}; expected (H, W) or (H, W, 3).")


def read_grey(path: str | Path, **kwargs) -> np.ndarray:
    """Read any supported image as a 2-D grey array (uint8, uint16 or float for DICOM values)."""
    return to_grey(read_image(path, **kwargs)[0])


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as a boolean array (``mask > 0`` on every channel, whatever the encoding).

    Handles 1-bit, grey, RGB and RGBA masks; the alpha channel is ignored.
    """
    arr = np.asarray(_open(Path(path)))
    if arr.ndim == 3:
        arr = arr[..., :3] if arr.shape[-1] == 4 else arr
        return np.any(arr > 0, axis=-1)
    return arr > 0

"""The model-input contract: 8-bit conversion, enhancement, resizing and normalisation.

The folder job (medmtl-preprocess) is :mod:`medmtl.workflows.preprocess`; output planning and
PNG writing are in :mod:`medmtl.io.outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from medmtl.errors import ConfigError, DataError
from medmtl.io.image import to_grey
from medmtl.io.meta import ImageMeta
from medmtl.preprocess.intensity import apply_clahe, equalize_hist, to_uint8

METHODS = ("none", "he", "clahe")
# Grey-level statistics of ImageNet (mean of the RGB means/stds): model inputs are
# (x/255 - GREY_MEAN) / GREY_STD so pretrained encoders see the scale they were trained on.
GREY_MEAN = 0.449
GREY_STD = 0.226


@dataclass(frozen=True)
class Conversion:
    """How an N-bit image becomes 8-bit (see :func:`medmtl.preprocess.intensity.to_uint8`).

    ``method="window"`` without ``center``/``width`` uses the DICOM file's own window.
    """

    method: str = "full"
    center: float | None = None
    width: float | None = None
    low: float = 0.5
    high: float = 99.5


def convert_to_uint8(
    image: np.ndarray, conv: Conversion, meta: ImageMeta | None = None, name: str = ""
) -> np.ndarray:
    """Grey 8-bit image from any read image, with the DICOM window as fallback for ``window``."""
    grey = to_grey(image)
    center, width = conv.center, conv.width
    if conv.method == "window" and (center is None or width is None):
        if meta is None or meta.window_center is None or meta.window_width is None:
            raise DataError(
                f"{name}: conversion.method=window but no conversion.center/width given and the "
                "file has no WindowCenter/WindowWidth. Give them, or use method=full|percentile."
            )
        center, width = meta.window_center, meta.window_width
    try:
        return to_uint8(grey, conv.method, center=center, width=width, low=conv.low, high=conv.high)
    except ValueError as exc:
        raise ConfigError(f"conversion: {exc}") from exc


@dataclass(frozen=True)
class PreprocessSettings:
    """Everything that changes the cached arrays (and so the cache key)."""

    image_size: int = 160
    conversion: Conversion = Conversion()  # N-bit/DICOM to 8-bit, as in medmtl-preprocess
    clahe: bool = False
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: int = 8
    thumb_size: int = 32

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["conversion"] = dict(self.conversion.__dict__)
        return out


def preprocess_image(
    image: np.ndarray, settings: PreprocessSettings, meta=None, name: str = ""
) -> np.ndarray:
    """The deterministic image transform shared by training, evaluation and inference."""
    img = convert_to_uint8(image, settings.conversion, meta, name)
    if settings.clahe:
        img = apply_clahe(img, settings.clahe_clip_limit, settings.clahe_tile_grid)
    size = settings.image_size
    interp = cv2.INTER_AREA if min(img.shape) >= size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def settings_from_data_config(data: dict) -> PreprocessSettings:
    """The deterministic preprocessing a checkpoint was trained with, from its data config."""
    return PreprocessSettings(
        image_size=int(data.get("image_size", 160)),
        conversion=Conversion(**(data.get("conversion") or {})),
        clahe=bool(data.get("clahe", False)),
        clahe_clip_limit=float(data.get("clahe_clip_limit", 2.0)),
        clahe_tile_grid=int(data.get("clahe_tile_grid", 8)),
        thumb_size=int((data.get("dedup") or {}).get("thumb_size", 32)),
    )


def normalize_for_model(image8: np.ndarray) -> np.ndarray:
    """uint8 (H, W) -> float32 (H, W) on the scale the network was trained on."""
    return (image8.astype(np.float32) / 255.0 - GREY_MEAN) / GREY_STD


def enhance(
    image8: np.ndarray, method: str, clip_limit: float = 2.0, tile_grid: int = 8
) -> np.ndarray:
    """Apply ``none``, ``he`` or ``clahe`` to a uint8 grey image."""
    if method == "none":
        return image8
    if method == "he":
        return equalize_hist(image8)
    if method == "clahe":
        return apply_clahe(image8, clip_limit, tile_grid)
    raise ConfigError(f"method={method!r} is unknown; choose one of {', '.join(METHODS)}.")

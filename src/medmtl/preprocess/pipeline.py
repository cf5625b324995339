"""The model-input contract: 8-bit conversion, enhancement, resizing and normalisation.

The folder job (medmtl-preprocess) is :mod:`medmtl.workflows.preprocess`; output planning and
PNG writing are in :mod:`medmtl.io.outputs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from medmtl.errors import ConfigError, DataError
from medmtl.io.image import to_grey
from medmtl.io.meta import ImageMeta
from medmtl.preprocess.intensity import apply_clahe, equalize_hist, to_uint8
from medmtl.settings.commands import PREPROCESS_METHODS
from medmtl.settings.data import DATA, Conversion

METHODS = PREPROCESS_METHODS  # the enhancements after the 8-bit conversion
# Grey-level statistics of ImageNet (mean of the RGB means/stds): model inputs are
# (x/255 - GREY_MEAN) / GREY_STD so pretrained encoders see the scale they were trained on.
GREY_MEAN = 0.449
GREY_STD = 0.226


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
    """The model-input contract: everything between an image file and the network's input.

    One object serves the data module (what the cache holds), the checkpoint and the ONNX
    metadata (what ``medmtl-predict`` applies to new images) and ``medmtl-preprocess``. It is
    stored as :meth:`to_dict` and read back with :meth:`from_dict`.
    """

    # the defaults are the data schema's (medmtl.settings.data.DataSettings)
    image_size: int = DATA.image_size  # side of the square network input
    conversion: Conversion = DATA.conversion  # N-bit/DICOM to 8-bit
    clahe: bool = DATA.clahe  # deterministic CLAHE on the 8-bit image, before resizing
    clahe_clip_limit: float = DATA.clahe_clip_limit
    clahe_tile_grid: int = DATA.clahe_tile_grid
    mean: float = GREY_MEAN  # network input = (x / 255 - mean) / std
    std: float = GREY_STD
    # per-image intensity standardisation instead: (x - mean(x)) / std(x) of each image, so
    # that a scanner's overall brightness and contrast do not reach the network
    standardize: bool = DATA.standardize

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON and ``weights_only`` checkpoints can hold them)."""
        return {
            "image_size": self.image_size,
            "conversion": asdict(self.conversion),
            "clahe": self.clahe,
            "clahe_clip_limit": self.clahe_clip_limit,
            "clahe_tile_grid": self.clahe_tile_grid,
            "normalize": {"mean": self.mean, "std": self.std},
            "standardize": self.standardize,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PreprocessSettings:
        """Read :meth:`to_dict`'s output, or a data config (``data.image_size``, ``data.clahe``,
        ...), whose other keys are ignored; missing keys take their defaults."""
        d = dict(d or {})
        conv = dict(d.get("conversion") or {})
        unknown = set(conv) - set(Conversion.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                f"conversion: unknown key(s) {', '.join(sorted(unknown))}; known: "
                f"{', '.join(Conversion.__dataclass_fields__)}."
            )
        norm = dict(d.get("normalize") or {})
        default = cls()
        return cls(
            image_size=int(d.get("image_size", default.image_size)),
            conversion=Conversion(**conv),
            clahe=bool(d.get("clahe", default.clahe)),
            clahe_clip_limit=float(d.get("clahe_clip_limit", default.clahe_clip_limit)),
            clahe_tile_grid=int(d.get("clahe_tile_grid", default.clahe_tile_grid)),
            mean=float(norm.get("mean", default.mean)),
            std=float(norm.get("std", default.std)),
            standardize=bool(d.get("standardize", default.standardize)),
        )

    def to_uint8(
        self, image: np.ndarray, meta: ImageMeta | None = None, name: str = ""
    ) -> np.ndarray:
        """The grey 8-bit image at its own size (what overlays and ``medmtl-preprocess`` show)."""
        return convert_to_uint8(image, self.conversion, meta, name)

    def model_image(
        self, image: np.ndarray, meta: ImageMeta | None = None, name: str = ""
    ) -> np.ndarray:
        """8-bit, optional CLAHE, resized to ``image_size``: what the cache holds."""
        img = self.to_uint8(image, meta, name)
        if self.clahe:
            img = apply_clahe(img, self.clahe_clip_limit, self.clahe_tile_grid)
        size = self.image_size
        interp = cv2.INTER_AREA if min(img.shape) >= size else cv2.INTER_LINEAR
        return cv2.resize(img, (size, size), interpolation=interp)

    def normalize(self, image8: np.ndarray) -> np.ndarray:
        """uint8 (H, W) -> float32 (H, W) on the scale the network was trained on."""
        if self.standardize:
            return standardize_image(image8)
        return ((image8.astype(np.float32) / 255.0 - self.mean) / self.std).astype(np.float32)

    def model_input(
        self, image: np.ndarray, meta: ImageMeta | None = None, name: str = ""
    ) -> np.ndarray:
        """The network input of one read image: :meth:`model_image`, then :meth:`normalize`."""
        return self.normalize(self.model_image(image, meta, name))


# an (almost) flat image keeps its values instead of having its noise blown up
_MIN_STD = 1.0 / 255.0


def standardize_image(image8: np.ndarray) -> np.ndarray:
    """Per-image standardisation of an 8-bit image: ``(x - mean(x)) / std(x)`` on x / 255
    (float32), the standard deviation floored at one grey level."""
    x = np.asarray(image8, dtype=np.float32) / 255.0
    return ((x - x.mean()) / max(float(x.std()), _MIN_STD)).astype(np.float32)


def enhance(
    image8: np.ndarray, method: str, clip_limit: float = 2.0, tile_grid: int = 8
) -> np.ndarray:
    """Apply ``none``, ``he`` or ``clahe`` to a uint8 grey image (``medmtl-preprocess``)."""
    if method == "none":
        return image8
    if method == "he":
        return equalize_hist(image8)
    if method == "clahe":
        return apply_clahe(image8, clip_limit, tile_grid)
    raise ConfigError(f"method={method!r} is unknown; choose one of {', '.join(METHODS)}.")

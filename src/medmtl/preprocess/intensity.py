"""N-bit to 8-bit conversion, intensity statistics, histograms and enhancement (HE, CLAHE, gamma).

One implementation serves the library, ``medmtl-preprocess`` and the training pipeline.

Conversion methods (``to_uint8(image, method=...)``):

* ``full``: linear map of [min, max] of the image to [0, 255];
* ``window``: DICOM linear VOI window (PS3.3 C.11.2.1.2.1) with ``center`` and ``width``:
  values below ``center - 0.5 - (width - 1) / 2`` become 0, above
  ``center - 0.5 + (width - 1) / 2`` become 255, linear in between;
* ``percentile``: linear map of the [``low``, ``high``] percentiles to [0, 255], clipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from medmtl.settings.data import CONVERSIONS


def _scale(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(img.shape, dtype=np.uint8)
    out = (img.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.round(np.clip(out, 0, 255)).astype(np.uint8)


def to_uint8(
    image: np.ndarray,
    method: str = "full",
    center: float | None = None,
    width: float | None = None,
    low: float = 0.5,
    high: float = 99.5,
) -> np.ndarray:
    """Convert an N-bit (or float) image to uint8 with a named method (see the module doc).

    uint8 input with ``method="full"`` is returned unchanged (not stretched).
    """
    if method not in CONVERSIONS:
        raise ValueError(f"unknown conversion {method!r}; choose one of {', '.join(CONVERSIONS)}")
    if method == "full":
        if image.dtype == np.uint8:
            return image
        return _scale(image, float(image.min()), float(image.max()))
    if method == "window":
        if center is None or width is None:
            raise ValueError("method='window' needs center and width")
        if width < 1:
            raise ValueError(f"window width must be >= 1, got {width}")
        lo = center - 0.5 - (width - 1) / 2
        hi = center - 0.5 + (width - 1) / 2
        return _scale(image, lo, hi)
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    lo, hi = np.percentile(image, [low, high])
    return _scale(image, float(lo), float(hi))


# --- statistics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IntensityStats:
    """The study's brightness and contrast measures of a grey image."""

    brightness: float  # mean grey level
    contrast_std: float  # standard deviation of the grey levels
    contrast_range: float  # max - min
    min: float
    max: float


def intensity_stats(image: np.ndarray) -> IntensityStats:
    img = image.astype(np.float64)
    lo, hi = float(img.min()), float(img.max())
    return IntensityStats(float(img.mean()), float(img.std()), hi - lo, lo, hi)


def n_levels(image: np.ndarray) -> int:
    """Number of grey levels of an integer image's dtype (256 for uint8, 65536 for uint16)."""
    if image.dtype == np.uint8:
        return 256
    if image.dtype == np.uint16:
        return 65536
    raise ValueError(f"expected uint8 or uint16, got {image.dtype}")


def infer_max_value(image: np.ndarray) -> int:
    """Top grey level of an integer image: 255 for uint8; for uint16 the smallest 2^k − 1 that
    holds the data (a 12-bit image stored in 16 bits gives 4095)."""
    if image.dtype == np.uint8:
        return 255
    n_levels(image)  # raises for other dtypes
    return int(2 ** max(8, int(np.ceil(np.log2(int(image.max()) + 1)))) - 1)


def histogram(image: np.ndarray, bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Histogram counts and bin left edges over the dtype's full range (uint8/uint16)."""
    levels = n_levels(image)
    bins = bins or min(levels, 4096)
    counts, edges = np.histogram(image, bins=bins, range=(0, levels))
    return counts, edges[:-1]


def cdf(counts: np.ndarray) -> np.ndarray:
    """Cumulative distribution (0..1) of histogram counts."""
    c = np.cumsum(counts, dtype=np.float64)
    return c / c[-1] if c[-1] > 0 else c


# --- enhancement ---------------------------------------------------------------------------


def equalize_hist(
    image: np.ndarray, max_value: int | None = None, backend: str = "auto"
) -> np.ndarray:
    """Global histogram equalisation of a uint8 or uint16 image.

    Same rule as OpenCV's ``equalizeHist`` (the numpy path gives identical output on uint8):
    the lowest occupied level maps to 0 and level v to round(top·(cdf(v) − h_min)/(N − h_min)).
    The output range is [0, max_value]; by default 255 for uint8 and :func:`infer_max_value`
    for uint16. ``backend="auto"`` uses OpenCV for plain uint8 (faster) and numpy otherwise.
    """
    if backend not in ("auto", "numpy", "opencv"):
        raise ValueError(f"backend must be auto, numpy or opencv, got {backend!r}")
    plain8 = image.dtype == np.uint8 and max_value in (None, 255)
    if backend == "opencv" or (backend == "auto" and plain8):
        if not plain8:
            raise ValueError("the OpenCV backend handles uint8 images with max_value 255 only")
        return cv2.equalizeHist(image)
    levels = n_levels(image)
    top = infer_max_value(image) if max_value is None else int(max_value)
    hist = np.bincount(image.ravel(), minlength=levels).astype(np.int64)
    total = image.size
    first = int(np.flatnonzero(hist)[0])
    if hist[first] == total:  # constant image
        return np.full_like(image, min(first, top))
    scale = top / (total - hist[first])
    cum = np.cumsum(hist) - hist[first]
    lut = np.clip(np.round(cum * scale), 0, top).astype(image.dtype)
    lut[:first] = 0
    return lut[image]


def clip_histogram(hist: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """CLAHE's clipping step: (clipped histogram, histogram after redistributing the excess).

    The excess above ``limit`` is spread uniformly over all bins, the remainder one count per
    bin at regular steps, as OpenCV does. The total count is preserved.
    """
    hist = hist.astype(np.int64)
    clipped = np.minimum(hist, limit)
    excess = int(hist.sum() - clipped.sum())
    n = hist.size
    out = clipped + excess // n
    residual = excess % n
    if residual:
        step = max(n // residual, 1)
        out[: residual * step : step][:residual] += 1
    return clipped, out


def _clahe_numpy(
    image: np.ndarray, clip_limit: float, grid: tuple[int, int], bins: int, top: int
) -> np.ndarray:
    """CLAHE over grey levels 0..top with ``bins`` bins per tile, bilinear between tiles."""
    h, w = image.shape
    gy, gx = grid
    ph, pw = (-h) % gy, (-w) % gx
    img = np.pad(image, ((0, ph), (0, pw)), mode="reflect") if (ph or pw) else image
    th, tw = img.shape[0] // gy, img.shape[1] // gx
    levels = top + 1
    binned = (np.minimum(img.astype(np.int64), top) * bins) // levels
    tile_pixels = th * tw
    limit = max(int(clip_limit * tile_pixels / bins), 1) if clip_limit > 0 else tile_pixels
    tiles = binned.reshape(gy, th, gx, tw).transpose(0, 2, 1, 3).reshape(gy * gx, -1)
    offsets = np.arange(gy * gx)[:, None] * bins
    hists = np.bincount((tiles + offsets).ravel(), minlength=gy * gx * bins).reshape(gy * gx, bins)
    luts = np.empty((gy * gx, bins), dtype=np.float64)
    for t in range(gy * gx):
        _, redistributed = clip_histogram(hists[t], limit)
        luts[t] = np.cumsum(redistributed) * (top / tile_pixels)
    luts = luts.reshape(gy, gx, bins)
    # bilinear interpolation between the four nearest tile centres
    yc = (np.arange(h) + 0.5) / th - 0.5
    xc = (np.arange(w) + 0.5) / tw - 0.5
    y0 = np.clip(np.floor(yc).astype(int), 0, gy - 1)
    x0 = np.clip(np.floor(xc).astype(int), 0, gx - 1)
    y1 = np.clip(y0 + 1, 0, gy - 1)
    x1 = np.clip(x0 + 1, 0, gx - 1)
    wy = np.clip(yc - y0, 0, 1)[:, None]
    wx = np.clip(xc - x0, 0, 1)[None, :]
    b = binned[:h, :w]
    Y0, Y1, X0, X1 = y0[:, None], y1[:, None], x0[None, :], x1[None, :]
    top_row = (1 - wx) * luts[Y0, X0, b] + wx * luts[Y0, X1, b]
    bottom_row = (1 - wx) * luts[Y1, X0, b] + wx * luts[Y1, X1, b]
    out = (1 - wy) * top_row + wy * bottom_row
    return np.clip(np.round(out), 0, top).astype(image.dtype)


def apply_clahe(
    image: np.ndarray,
    clip_limit: float = 2.0,
    tile_grid_size: tuple[int, int] | int = 8,
    bins: int | None = None,
    max_value: int | None = None,
    backend: str = "auto",
) -> np.ndarray:
    """Contrast Limited Adaptive Histogram Equalization of a 2-D uint8 or uint16 image.

    ``clip_limit`` is relative, as in OpenCV: a bin may hold at most
    ``clip_limit · tile_pixels / bins`` counts. uint8 uses OpenCV (the reference). uint16 uses
    the same algorithm in numpy over the levels 0..max_value (default: :func:`infer_max_value`,
    e.g. 4095 for 12-bit data) in ``bins`` bins (default min(levels, 4096)), and the output stays
    in [0, max_value] — OpenCV's 16-bit CLAHE would use 65536 bins and stretch the output to the
    full 16-bit range. ``backend="numpy"`` forces the numpy implementation for uint8 too.
    """
    if image.ndim != 2:
        raise ValueError(f"apply_clahe expects a 2-D image, got shape {image.shape}")
    if backend not in ("auto", "numpy", "opencv"):
        raise ValueError(f"backend must be auto, numpy or opencv, got {backend!r}")
    grid = (
        (tile_grid_size, tile_grid_size)
        if isinstance(tile_grid_size, int)
        else tuple(tile_grid_size)
    )
    plain8 = image.dtype == np.uint8 and bins in (None, 256) and max_value in (None, 255)
    if backend == "opencv" and not plain8:
        raise ValueError(
            "the OpenCV backend handles uint8 images with 256 bins and max_value 255 only"
        )
    if plain8 and backend != "numpy":
        clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(grid[1], grid[0]))
        return clahe.apply(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"apply_clahe expects uint8 or uint16, got {image.dtype}")
    top = infer_max_value(image) if max_value is None else int(max_value)
    bins = bins or min(top + 1, 4096)
    return _clahe_numpy(image, float(clip_limit), grid, int(bins), top)

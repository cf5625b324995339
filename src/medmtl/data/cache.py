"""Decode, convert and resize every image once; cache the result keyed by content and settings.

The deterministic part of the pipeline (read, grey, 8-bit, optional CLAHE, resize) runs here,
once per file; random augmentation runs later on the cached arrays (MONAI's split between
deterministic and random transforms).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from medmtl.data.duplicates import thumbnail
from medmtl.data.index import Case
from medmtl.errors import DataError
from medmtl.io.files import atomic_path
from medmtl.io.image import read_image, read_mask, to_grey
from medmtl.preprocess.pipeline import PreprocessSettings

# 2: lesion instance labels instead of one boolean mask; 3: each lesion's area on the original
# image and the original pixel's area in mm²
CACHE_VERSION = 3
MAX_LESIONS = 255  # instance labels are uint8
log = logging.getLogger(__name__)


@dataclass
class CachedCase:
    image: np.ndarray  # (S, S) uint8
    lesions: np.ndarray  # (S, S) uint8 lesion instance labels, 0 background (lesion_labels)
    thumb: np.ndarray  # (t, t) float32, from the original image, for duplicate search
    # lesion k's area in pixels of the original image at [k - 1] (0: no such label)
    lesion_area_px: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    pixel_mm2: float = float("nan")  # an original pixel's area in mm² (NaN: spacing unknown)

    def lesion_area_mm2(self, label: int) -> float:
        """Lesion ``label``'s area in mm² on the original image (NaN where the spacing or the
        lesion is unknown)."""
        if not 0 < label <= len(self.lesion_area_px):
            return float("nan")
        return float(self.lesion_area_px[label - 1] * self.pixel_mm2)

    @property
    def mask(self) -> np.ndarray:
        """(S, S) bool: the lesion mask the network learns (every lesion)."""
        return self.lesions > 0


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Area-resize a boolean mask and keep pixels at least half covered."""
    small = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return small >= 0.5


def resize_lesions(lesions: np.ndarray, size: int) -> np.ndarray:
    """Resize instance labels: the foreground exactly as :func:`resize_mask` of all lesions
    together, each of its pixels labelled with the lesion that covers most of it."""
    keep = resize_mask(lesions > 0, size)
    ids = [int(v) for v in np.unique(lesions) if v != 0]
    if not ids:
        return np.zeros((size, size), dtype=np.uint8)
    shares = np.stack(
        [cv2.resize((lesions == k).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
         for k in ids]
    )  # fmt: skip
    labels = np.asarray(ids, dtype=np.uint8)[shares.argmax(0)]
    return np.where(keep, labels, 0).astype(np.uint8)


def lesion_labels(masks: Sequence[np.ndarray], names: Sequence[object] = ()) -> np.ndarray:
    """Instance labels (uint8, 0 background) of one image's lesion masks: each connected part
    of each mask is a lesion of its own, numbered in file order, so that the lesions of an
    image with several mask files stay apart even where they touch. A pixel two lesions share
    goes to the smaller one, so that a lesion drawn inside another (BUSI's benign (58)) stays a
    lesion. More than :data:`MAX_LESIONS` lesions is a DataError naming the file."""
    from medmtl.metrics import components

    parts: list[np.ndarray] = []
    for k, mask in enumerate(masks):
        labels = components(mask)
        parts += [labels == j for j in range(1, int(labels.max()) + 1)]
        if len(parts) > MAX_LESIONS:
            name = names[k] if k < len(names) else f"mask {k}"
            raise DataError(
                f"{name}: more than {MAX_LESIONS} separate lesions in one image; is this a lesion "
                "mask? Fix or remove it."
            )
    out = np.zeros(masks[0].shape if len(masks) else (0, 0), dtype=np.uint8)
    for j in sorted(range(len(parts)), key=lambda j: -int(parts[j].sum())):
        out[parts[j]] = j + 1  # larger first: a smaller lesion paints over what they share
    return out


class MaskSizeError(DataError):
    """A mask file whose size differs from its image's."""


def read_case(case: Case):
    """Grey image, lesion instance labels (:func:`lesion_labels`; ``> 0`` is the mask of all
    of them) and metadata of one case; DataError on a bad file."""
    raw, meta = read_image(case.image)
    image = to_grey(raw)
    masks = []
    for mpath in case.masks:
        m = read_mask(mpath)
        if m.shape != image.shape:
            raise MaskSizeError(
                f"{mpath}: mask is {m.shape[1]}x{m.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]}. Fix or remove the mask."
            )
        masks.append(m)
    lesions = lesion_labels(masks, case.masks) if masks else np.zeros(image.shape[:2], np.uint8)
    return image, lesions, meta


def load_case(case: Case, settings: PreprocessSettings, thumb_size: int = 32) -> CachedCase:
    """Read one case from disk and apply the deterministic transform; DataError on a bad file."""
    image, lesions, meta = read_case(case)
    grid = resize_lesions(lesions, settings.image_size)
    lost = sorted(set(np.unique(lesions).tolist()) - set(np.unique(grid).tolist()))
    if lost:  # counted nowhere from here on: say so rather than drop it silently
        log.warning(
            "%s: %d lesion(s) smaller than half a pixel at data.image_size=%d are not scored "
            "(areas %s px on the original)",
            case.image, len(lost), settings.image_size,
            ", ".join(str(int((lesions == k).sum())) for k in lost),
        )  # fmt: skip
    sp = meta.pixel_spacing_mm
    return CachedCase(
        image=settings.model_image(image, meta, str(case.image)),
        lesions=grid,
        thumb=thumbnail(image, thumb_size),
        lesion_area_px=np.bincount(lesions.ravel(), minlength=1)[1:].astype(np.float64),
        pixel_mm2=float(sp[0] * sp[1]) if sp else float("nan"),
    )


def _key(case: Case, settings: PreprocessSettings, thumb_size: int) -> str:
    """The cache file of a case: its files' bytes and every setting that changes the arrays
    (normalisation does not: the cache holds 8-bit images)."""
    keyed = {k: v for k, v in settings.to_dict().items() if k != "normalize"}
    h = hashlib.sha1()
    h.update(
        json.dumps({"v": CACHE_VERSION, **keyed, "thumb_size": thumb_size}, sort_keys=True).encode()
    )
    for path in (case.image, *case.masks):
        try:
            h.update(Path(path).read_bytes())
        except OSError as exc:
            raise DataError(f"{path}: cannot be read ({exc.strerror}).") from exc
        h.update(b"\0")
    return h.hexdigest()


# numpy parses an .npy header with ast.literal_eval, which is not thread-safe in CPython 3.11
# (python/cpython#106905: "SystemError: AST constructor recursion depth mismatch", seen here
# with two loader threads); reading a small cached file is quick, so the reads take turns
_READ_LOCK = threading.Lock()


_CACHED = ("image", "lesions", "thumb", "lesion_area_px", "pixel_mm2")


def _load_or_build(
    case: Case, settings: PreprocessSettings, cache_dir: Path | None, thumb_size: int
) -> CachedCase:
    if cache_dir is None:
        return load_case(case, settings, thumb_size)
    file = cache_dir / f"{_key(case, settings, thumb_size)}.npz"
    if file.exists():
        try:
            with _READ_LOCK, np.load(file) as z:
                arrays = {k: z[k] for k in _CACHED}
            return CachedCase(**arrays | {"pixel_mm2": float(arrays["pixel_mm2"])})
        except (OSError, ValueError, KeyError):
            log.warning("cache file %s is damaged; rebuilding it", file)
    item = load_case(case, settings, thumb_size)
    # two loader threads may build identical files (same key) at once: each has its own temp file
    with atomic_path(file) as tmp:
        np.savez(tmp, **{k: getattr(item, k) for k in _CACHED})
    return item


def load_cases(
    cases: Sequence[Case],
    settings: PreprocessSettings,
    cache_dir: str | Path | None,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
    thumb_size: int = 32,
) -> tuple[list[CachedCase | None], list[str]]:
    """Every case from the cache when possible, else decoded; a bad file gives ``None`` in its
    place and its problem in the list (sorted), so that all are reported together."""
    cdir = Path(cache_dir) / "preprocessed" if cache_dir is not None else None
    if cdir is not None:
        cdir.mkdir(parents=True, exist_ok=True)
    results: list[CachedCase | None] = [None] * len(cases)
    problems: list[str] = []

    def work(i: int) -> None:
        try:
            results[i] = _load_or_build(cases[i], settings, cdir, thumb_size)
        except DataError as exc:
            problems.append(str(exc))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, _ in enumerate(pool.map(work, range(len(cases))), start=1):
            if progress is not None:
                progress(done, len(cases))
    return results, sorted(problems)

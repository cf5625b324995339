"""File-level preprocessing: read any supported image, convert to 8-bit, enhance, write PNG."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from medmtl.errors import ConfigError, DataError
from medmtl.io.files import ensure_output_dir
from medmtl.io.image import DICOM_EXTENSIONS, is_dicom, read_image, to_grey
from medmtl.io.meta import ImageMeta
from medmtl.preprocess.intensity import apply_clahe, equalize_hist, to_uint8

METHODS = ("none", "he", "clahe")
# Grey-level statistics of ImageNet (mean of the RGB means/stds): model inputs are
# (x/255 - GREY_MEAN) / GREY_STD so pretrained encoders see the scale they were trained on.
GREY_MEAN = 0.449
GREY_STD = 0.226
READABLE = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", *DICOM_EXTENSIONS)


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


@dataclass
class FolderPlan:
    """Files to process and where each result goes; skipped files are kept for the report."""

    items: list[tuple[Path, Path]] = field(default_factory=list)  # (input, output PNG)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _is_candidate(path: Path) -> bool:
    return path.suffix.lower() in READABLE or (path.suffix == "" and is_dicom(path))


def plan_outputs(inp: Path, out: Path, out_option: str = "output") -> FolderPlan:
    """Map every input file to its own output PNG under ``out``, mirroring the folder structure.

    Refuses an output folder that is the input folder or lies inside it, so inputs are never
    overwritten and outputs never become inputs of the next run. File names are kept (Unicode
    included); ``a.png`` and ``a.dcm`` in one folder become ``a.png`` and ``a.dcm.png`` (and a
    numbered suffix on any further clash). Hidden files and broken links are listed as skipped.
    """
    inp, out = inp.expanduser(), out.expanduser()
    if not inp.exists():
        raise DataError(f"{inp}: input not found.")
    base = inp if inp.is_dir() else inp.parent
    out_r, base_r = out.resolve(), base.resolve()
    if out_r == base_r or (inp.is_dir() and base_r in out_r.parents):
        raise ConfigError(
            f"{out_option}={out} is the input folder or inside it; choose an output folder "
            f"outside {base} (inputs are never overwritten)."
        )
    files: Iterable[Path] = sorted(inp.rglob("*")) if inp.is_dir() else [inp]
    plan = FolderPlan()
    taken: set[str] = set()
    for f in files:
        if f.is_dir():
            continue
        if not f.exists():  # a symbolic link whose target is gone
            plan.skipped.append((f, "a broken symbolic link (its target does not exist)"))
            continue
        if f.name.startswith("."):
            plan.skipped.append((f, "a hidden file (name starts with '.')"))
            continue
        if not _is_candidate(f):
            plan.skipped.append((f, f"not an image file (extension '{f.suffix or 'none'}')"))
            continue
        rel = f.relative_to(base)
        target = out / rel.with_suffix(".png")
        n = 1
        while target.as_posix().casefold() in taken:  # a.png and a.dcm in one folder
            target = out / rel.parent / f"{rel.name}{f'_{n}' if n > 1 else ''}.png"
            n += 1
        taken.add(target.as_posix().casefold())
        plan.items.append((f, target))
    return plan


def write_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG atomically and with no metadata chunks (nothing from the source header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    tmp.replace(path)


@dataclass
class RunSummary:
    written: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def preprocess_files(
    inp: Path,
    out: Path,
    method: str = "clahe",
    conversion: Conversion = Conversion(),
    clip_limit: float = 2.0,
    tile_grid: int = 8,
    frame: int = 0,
    crop_us_region: bool | int = False,
    compare: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Process a file or a folder; a bad file is refused (with its reason), the rest go on."""
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is unknown; choose one of {', '.join(METHODS)}.")
    plan = plan_outputs(Path(inp), Path(out))
    ensure_output_dir(out, "output")
    summary = RunSummary(skipped=plan.skipped)
    items = plan.items
    if progress and len(items) > 1:
        from tqdm import tqdm

        items = tqdm(items, desc="preprocess", unit="img")
    for src, dst in items:
        try:
            image, meta = read_image(src, frame=frame, crop_us_region=crop_us_region)
            img8 = convert_to_uint8(image, conversion, meta, name=str(src))
            write_png(enhance(img8, method, clip_limit, tile_grid), dst)
            summary.written.append(dst)
            if compare:
                from medmtl.reporting.figures import enhancement_comparison, save_figure

                panels = [
                    ("original (8-bit)", img8),
                    ("HE", enhance(img8, "he")),
                    (
                        f"CLAHE (clip {clip_limit}, {tile_grid}x{tile_grid})",
                        enhance(img8, "clahe", clip_limit, tile_grid),
                    ),
                ]
                fig = enhancement_comparison(panels, title=src.name)
                summary.figures.append(save_figure(fig, dst.with_name(dst.stem + "_compare.png")))
        except DataError as exc:
            summary.refused.append((src, str(exc)))
    return summary

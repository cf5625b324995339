"""medmtl-preprocess as a job: every image of a file or folder to an 8-bit (enhanced) PNG."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from medmtl.errors import ConfigError, DataError, Stopped
from medmtl.io.files import ensure_output_dir
from medmtl.io.image import read_image
from medmtl.io.outputs import plan_outputs, write_png
from medmtl.preprocess.pipeline import METHODS, PreprocessSettings, enhance
from medmtl.reporting.figures import enhancement_comparison, save_figure
from medmtl.settings.commands import PreprocessToolSettings


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
    settings: PreprocessSettings | None = None,
    frame: int = 0,
    crop_us_region: bool | int = False,
    compare: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Process a file or a folder; a bad file is refused (with its reason), the rest go on.

    ``settings`` gives the 8-bit conversion and the CLAHE clip limit and tile grid (the same
    object the training pipeline uses); ``method`` is the enhancement applied after it.
    """
    settings = settings or PreprocessSettings()
    clip_limit, tile_grid = settings.clahe_clip_limit, settings.clahe_tile_grid
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is unknown; choose one of {', '.join(METHODS)}.")
    plan = plan_outputs(Path(inp), Path(out))
    if not plan.items:
        raise DataError(
            f"{inp}: no image files found (supported: PNG, JPEG, TIFF, BMP, DICOM); point "
            "input= at a file or a folder of images."
        )
    ensure_output_dir(out, "output")
    summary = RunSummary(skipped=plan.skipped)
    items = plan.items
    if progress and len(items) > 1:
        from tqdm import tqdm

        items = tqdm(items, desc="preprocess", unit="img")
    try:
        for src, dst in items:
            try:
                image, meta = read_image(src, frame=frame, crop_us_region=crop_us_region)
                img8 = settings.to_uint8(image, meta, name=str(src))
                write_png(enhance(img8, method, clip_limit, tile_grid), dst)
                summary.written.append(dst)
                if compare:
                    panels = [
                        ("original (8-bit)", img8),
                        ("HE", enhance(img8, "he")),
                        (
                            f"CLAHE (clip {clip_limit}, {tile_grid}x{tile_grid})",
                            enhance(img8, "clahe", clip_limit, tile_grid),
                        ),
                    ]
                    fig = enhancement_comparison(panels, title=src.name)
                    summary.figures.append(
                        save_figure(fig, dst.with_name(dst.stem + "_compare.png"))
                    )
            except DataError as exc:
                summary.refused.append((src, str(exc)))
    except Stopped as stop:
        left = len(plan.items) - len(summary.written) - len(summary.refused)
        raise stop.keeping(
            f"{len(summary.written)} image(s) written to {out} before it are whole; {left} not done"
        ) from None
    return summary


def preprocess_from_config(cfg: DictConfig) -> RunSummary:
    """``medmtl-preprocess``: the job of ``conf/preprocess.yaml``, its options checked first."""
    s = PreprocessToolSettings.from_config(cfg)
    settings = PreprocessSettings.from_dict(
        {
            "conversion": s.conversion,
            "clahe_clip_limit": s.clahe["clip_limit"],
            "clahe_tile_grid": s.clahe["tile_grid"],
        }
    )
    return preprocess_files(
        Path(s.input),
        Path(s.output),
        method=s.method,
        settings=settings,
        frame=s.frame,
        crop_us_region=s.crop_us_region,
        compare=s.compare,
    )

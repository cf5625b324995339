"""medmtl-preprocess: N-bit/DICOM images to 8-bit PNG, with HE or CLAHE and comparison figures.

medmtl-preprocess input=<file|folder> output=<folder> method=none|he|clahe [compare=true]
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from medmtl.cli import report_files, run_or_exit
from medmtl.config import CONFIG_DIR


def _run(cfg: DictConfig) -> int:
    from medmtl.preprocess.pipeline import Conversion
    from medmtl.workflows.preprocess import preprocess_files

    summary = preprocess_files(
        Path(cfg.input),
        Path(cfg.output),
        method=cfg.method,
        conversion=Conversion(**cfg.conversion),
        clip_limit=float(cfg.clahe.clip_limit),
        tile_grid=int(cfg.clahe.tile_grid),
        frame=int(cfg.frame),
        crop_us_region=cfg.crop_us_region,
        compare=bool(cfg.compare),
    )
    print(
        f"{len(summary.written)} image(s) written to {cfg.output}"
        + (f", {len(summary.figures)} comparison figure(s)" if summary.figures else "")
        + f"; {len(summary.refused)} refused; {len(summary.skipped)} skipped."
    )
    report_files(summary.skipped, summary.refused, "REFUSED")
    if not summary.written and not summary.refused:
        print(f"medmtl: error: no image files found in {cfg.input}.", file=sys.stderr)
        return 2
    return 1 if summary.refused else 0


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="preprocess")
def main(cfg: DictConfig) -> None:
    sys.exit(run_or_exit(_run, cfg))


if __name__ == "__main__":
    main()

"""medmtl-preprocess: N-bit/DICOM images to 8-bit PNG, with HE or CLAHE and comparison figures.

medmtl-preprocess input=<file|folder> output=<folder> method=none|he|clahe [compare=true]
"""

import sys

import hydra
from omegaconf import DictConfig

from medmtl.cli import report_files, run_or_exit
from medmtl.cli.options import hydra_main
from medmtl.config import CONFIG_DIR
from medmtl.settings.commands import PreprocessToolSettings


def _run(cfg: DictConfig) -> int:
    from medmtl.workflows.preprocess import preprocess_from_config

    summary = preprocess_from_config(cfg)
    print(
        f"{len(summary.written)} image(s) written to {cfg.output}"
        + (f", {len(summary.figures)} comparison figure(s)" if summary.figures else "")
        + f"; {len(summary.refused)} refused; {len(summary.skipped)} skipped."
    )
    report_files(summary.skipped, summary.refused, "REFUSED")
    return 1 if summary.refused else 0


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="preprocess")
def _main(cfg: DictConfig) -> None:
    sys.exit(run_or_exit(_run, cfg))


def main() -> None:
    hydra_main(
        "medmtl-preprocess",
        __doc__,
        "preprocess",
        _main,
        PreprocessToolSettings,
        check=PreprocessToolSettings.from_config,  # before Hydra makes the run folder
    )


if __name__ == "__main__":
    main()

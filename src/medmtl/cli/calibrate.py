"""medmtl-calibrate: calibrate trained runs again, or for the first time.

medmtl-calibrate <run folder> [<run folder> ...] | <sweep folder>
                 [alpha=<as the run's|0.1>] [by_class=<as the run's|false>]
                 [unlike_quantile=0.95|null] [data_root=<data folder>]

For every run (every finished run of a sweep folder), fits on the run's own validation split,
exactly as medmtl-train does after training: the temperature of the class probabilities, the
conformal answer sets (error rate alpha, class by class with by_class=true) and the
"unlike the training data" score (its threshold passes unlike_quantile of the validation
images; null: none). They are stored in the run's best checkpoint (atomically; the rest of
it is unchanged) and listed in <run>/calibration.json. For checkpoints trained before one of
these existed; evaluate again (medmtl-eval, medmtl-ensemble) to see their effect.
"""

from __future__ import annotations

from medmtl.cli.kv import _convert, kv_main, parse_kv

DEFAULTS = {"alpha": None, "by_class": None, "unlike_quantile": 0.95, "data_root": None}


def _run(argv: list[str]) -> int:
    folders = [a for a in argv if "=" not in a]
    opts = parse_kv([a for a in argv if "=" in a], DEFAULTS)
    from medmtl.workflows.calibrate import recalibrate

    by_class = opts["by_class"]  # None (as the run's) or a true/false given on the command line
    if by_class is not None:
        by_class = _convert("by_class", str(by_class), False)
    recalibrate(folders, opts["alpha"], by_class, opts["unlike_quantile"], opts["data_root"])
    return 0


def main(argv: list[str] | None = None) -> None:
    kv_main(__doc__, _run, argv)


if __name__ == "__main__":
    main()

"""medmtl-calibrate: calibrate trained runs again, or for the first time.

medmtl-calibrate <run folder> [<run folder> ...] | <sweep folder>
                 [alpha=<as the run's|0.1>] [by_class=<as the run's|false>]
                 [unlike_quantile=0.95|null] [shift_dims=64|null] [data_root=<data folder>]

For every run (every finished run of a sweep folder), fits on the run's own validation split,
exactly as medmtl-train does after training: the temperature of the class probabilities, the
conformal answer sets (error rate alpha, class by class with by_class=true) and the
"unlike the training data" score (its threshold passes unlike_quantile of the validation
images; null: none) and the shift test's reference (the validation images' features on
shift_dims principal components of the training images'; null: none). They are stored in the
run's best checkpoint (atomically; the rest of it is unchanged) and listed in
<run>/calibration.json. For checkpoints trained before one of
these existed; evaluate again (medmtl-eval, medmtl-ensemble) to see their effect.
"""

from __future__ import annotations

from medmtl.cli.options import parse, settings_main
from medmtl.settings.commands import CalibrateSettings


def _run(argv: list[str]) -> int:
    settings = parse(argv, CalibrateSettings, positional="runs")
    from medmtl.workflows.calibrate import recalibrate

    s = settings
    recalibrate(s.runs, s.alpha, s.by_class, s.unlike_quantile, s.data_root, s.shift_dims)
    return 0


def main(argv: list[str] | None = None) -> None:
    settings_main("medmtl-calibrate", __doc__, CalibrateSettings, _run, argv, positional="runs",
                  synopsis="<run folder> [...] | <sweep folder> [key=value ...]")  # fmt: skip


if __name__ == "__main__":
    main()

"""medmtl-ensemble: average several runs (e.g. the k fold models) and evaluate them as one model.

medmtl-ensemble <run folder> [<run folder> ...] | <sweep folder>  out=<folder>
                [select=<key>=<value>] [split=test] [export=<model.onnx>] [data_root=<data folder>]
                [empty_mask_class=as_trained|null|<class>] [tta=false] [gate=as_trained|tune]
                [target_sensitivity=null|0.95]
                [adapt=none|bn] [conformal_alpha=0.1|null] [conformal_by_class=false]
                [wandb=none|offline|online]

Averages the class probabilities and the mask probability maps of the runs' best checkpoints,
then writes metrics.json, predictions_<split>.csv and the figures into out= exactly like
medmtl-eval; export= also writes an ONNX model for medmtl-predict. select= keeps the jobs of a
sweep that set this value (e.g. select=loss.seg_weight=0.7: the fold models of one row; several
as select=[a=1,b=2]). tta=true adds the horizontal mirror image of every input to the
average (test-time flip). gate=tune chooses the classification gate's thresholds (P(normal) and
the mask's own maximum) and the mask threshold, written to gate.json, on the fold models'
out-of-fold validation predictions, never on the test split: the best all-image Dice among the
settings that leave no more lesion images empty than the plain gate at 0.5; with
target_sensitivity=0.95, the fewest normal images with a false mask among the settings whose
out-of-fold lesion sensitivity reaches 0.95 (the trade-off: figures/gate_tradeoff.png).
adapt=bn re-estimates every member's batch-norm statistics on
the evaluated images (AdaBN, no labels). conformal_alpha= calibrates conformal answer sets of
k-fold members on their out-of-fold validation predictions (conformal.json; null: none;
conformal_by_class=true: class by class). medmtl-tables shows an ensemble inside a sweep
folder as its own row. wandb=offline (or online) also logs the evaluation as a W&B run
(job_type ensemble) in the members' W&B group: per-image table with masks, figures, metrics.
"""

from __future__ import annotations

from medmtl.cli.options import parse, settings_main
from medmtl.settings.commands import EnsembleSettings


def _run(argv: list[str]) -> int:
    settings = parse(argv, EnsembleSettings, positional="runs")
    from medmtl.workflows.ensemble import run_ensemble_cli

    return run_ensemble_cli(settings)


def main(argv: list[str] | None = None) -> None:
    settings_main("medmtl-ensemble", __doc__, EnsembleSettings, _run, argv, positional="runs",
                  synopsis="<run folder> [...] | <sweep folder> out=<folder> [key=value ...]")  # fmt: skip


if __name__ == "__main__":
    main()

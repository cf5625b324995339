"""medmtl-shift: do these images come from the distribution the model was trained on?

medmtl-shift model=<model.onnx> input=<folder|list.csv|image> [out=<shift.json>]
medmtl-shift ckpt_path=<checkpoint|run|ensemble|sweep folder> input=... [alpha=0.01]

A two-sample test of the images' pooled encoder features against the reference sample stored
with the model (its validation images): the maximum mean discrepancy (MMD²) and its
permutation p-value; an ensemble tests against each member's reference (Bonferroni). Near
copies (the same scan twice, a re-crop) count once, and so do the images of one patient when a
list names them (group_column=<column>). Exit status 0 either way; the verdict is printed
(docs/inference.md, "Has the scanner changed?").
"""

from __future__ import annotations

from medmtl.cli import report_files
from medmtl.cli.options import parse, settings_main
from medmtl.settings.commands import ShiftSettings


def _run(argv: list[str]) -> int:
    settings = parse(argv, ShiftSettings)
    from medmtl.workflows.shift import describe, shift_of_input

    result, skipped = shift_of_input(settings)
    print(describe(result) + (f" -> {settings.out}" if settings.out else ""))
    report_files(skipped, [], "FAILED")
    return 0


def main(argv: list[str] | None = None) -> None:
    settings_main("medmtl-shift", __doc__, ShiftSettings, _run, argv,
                  synopsis="model=<model.onnx>|ckpt_path=<model> input=<folder|list.csv>")  # fmt: skip


if __name__ == "__main__":
    main()

"""medmtl-compare: draw the same images with ground truth and each model's mask, side by side.

medmtl-compare ckpt_paths=[stl.ckpt,mtl.ckpt] [split=test] [n=12] [out=compare_test.png] [data_root=...]
medmtl-compare evals=[<eval folder>,<eval folder>] [n=8] [out=compare_evaluations.png]
  two medmtl-eval runs of the same images with save_masks=true (e.g. two models on another
  hospital's images): the images where the second beats the first most, then the reverse
"""

from __future__ import annotations

from medmtl.cli.options import command_main, option_lines, parse, usage
from medmtl.settings.commands import CompareSettings

PROG = "medmtl-compare"


def _run(argv: list[str]) -> int:
    s = parse(argv, CompareSettings)
    if s.evals is not None:
        from medmtl.workflows.compare import compare_evaluations_to_file

        out = compare_evaluations_to_file(s.evals, s.n or 8, s.out)
    else:
        from medmtl.workflows.compare import compare_to_file

        out = compare_to_file(s.ckpt_paths, s.split, s.n or 12, s.out, s.data_root)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> None:
    command_main(
        PROG, __doc__, _run, argv, lambda: usage(PROG, __doc__, option_lines(CompareSettings))
    )


if __name__ == "__main__":
    main()

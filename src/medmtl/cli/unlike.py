"""How well the unlike-training score separates in-domain scans from others (AUROC, 95 % CI).

python -m medmtl.cli.unlike <in-domain predictions.csv> <other predictions.csv> [...]

The files are medmtl-eval's predictions_<split>.csv or medmtl-predict's predictions.csv of a
model with the score (docs/training.md); prints a Markdown table.
"""

from __future__ import annotations

from medmtl.cli.options import parse, settings_main
from medmtl.settings.commands import UnlikeSettings


def _run(argv: list[str]) -> int:
    settings = parse(argv, UnlikeSettings, positional="files")
    from medmtl.workflows.tables import unlike_auroc_table

    print(unlike_auroc_table(settings.files[0], settings.files[1:]))
    return 0


def main(argv: list[str] | None = None) -> None:
    settings_main("python -m medmtl.cli.unlike", __doc__, UnlikeSettings, _run, argv,
                  positional="files", synopsis="<in-domain predictions.csv> <other.csv> [...]")  # fmt: skip


if __name__ == "__main__":
    main()

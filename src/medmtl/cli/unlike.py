"""How well the unlike-training score separates in-domain scans from others (AUROC, 95 % CI).

python -m medmtl.cli.unlike <in-domain predictions.csv> <other predictions.csv> [...]

The files are medmtl-eval's predictions_<split>.csv or medmtl-predict's predictions.csv of a
model with the score (docs/training.md); prints a Markdown table.
"""

from __future__ import annotations

import sys

from medmtl.cli.kv import kv_main


def _run(argv: list[str]) -> int:
    from medmtl.workflows.tables import unlike_auroc_table

    print(unlike_auroc_table(argv[0], argv[1:]))
    return 0


def main(argv: list[str] | None = None) -> None:
    kv_main(__doc__, _run, argv)


if __name__ == "__main__":
    main(sys.argv[1:])

"""medmtl-tables: the study's table from a multirun folder (Markdown, CSV and LaTeX).

medmtl-tables <multirun dir> [--reference study] [--columns study|recipe] [--out <folder>]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medmtl.errors import MedmtlError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medmtl-tables", description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir", type=Path)
    parser.add_argument(
        "--reference",
        choices=["study"],
        default=None,
        help="add the study's published numbers and the difference",
    )
    parser.add_argument(
        "--columns",
        choices=["study", "recipe"],
        default="study",
        help="study: the study's metric columns; recipe: quality, epochs, wall time, peak memory",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the tables (default: <multirun dir>/tables)",
    )
    args = parser.parse_args(argv)
    from medmtl.reporting.tables import render, write_tables

    try:
        table, files = write_tables(
            args.multirun_dir, args.out, reference=args.reference == "study", columns=args.columns
        )
    except MedmtlError as exc:
        print(f"medmtl: error: {exc}", file=sys.stderr)
        return 2
    print(render(table, "md", reference=args.reference == "study", columns=args.columns))
    print("written: " + ", ".join(str(p) for p in files.values()))
    for problem in table.problems:
        print(f"NOT IN TABLE: {problem}", file=sys.stderr)
    return 1 if table.problems else 0


if __name__ == "__main__":
    sys.exit(main())

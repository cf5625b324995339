"""medmtl-tables: the study's table from a multirun folder (Markdown, CSV, LaTeX and figures).

medmtl-tables <multirun dir> [--reference study] [--baseline "<row label>"]
              [--columns study|recipe|validation|calibration] [--no-ci] [--out <folder>]
              [--into docs/results.md:<section>] [--wandb [offline|online]]
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from medmtl.cli import ArgumentParser, run_or_exit


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="medmtl-tables", description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir", type=Path)
    parser.add_argument(
        "--reference",
        choices=["study"],
        default=None,
        help="add the study's published numbers and the difference (BUSI runs only)",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="LABEL",
        help="compare every other row with this row: paired 95%% CI and Holm-corrected p-value",
    )
    parser.add_argument(
        "--columns",
        choices=["study", "recipe", "validation", "calibration"],
        default="study",
        help="study: the study's metric columns; recipe: quality, epochs, wall time, peak "
        "memory; validation: validation scores only (for choosing settings); calibration: "
        "ECE, NLL, Brier score, conformal coverage and set size on test, the temperature",
    )
    parser.add_argument(
        "--no-ci", action="store_true", help="leave out the 95%% confidence intervals"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the tables (default: <multirun dir>/tables)",
    )
    parser.add_argument(
        "--into",
        default=None,
        metavar="FILE:SECTION",
        help="also write the Markdown table, with this command above it, into the marked "
        "section SECTION of FILE (e.g. docs/results.md:lambda_5fold), replacing it if present",
    )
    parser.add_argument(
        "--wandb",
        nargs="?",
        const="offline",
        default=None,
        choices=["offline", "online"],
        help="also log the table (CIs and paired tests) and its figures as a W&B run "
        "(job_type tables) in the sweep's W&B group; offline unless 'online'",
    )
    args = parser.parse_args(argv)
    from medmtl.workflows.tables import log_tables_to_wandb, publish_table, write_tables

    table, files = run_or_exit(
        lambda: write_tables(
            args.multirun_dir,
            args.out,
            reference=args.reference == "study",
            columns=args.columns,
            baseline=args.baseline,
            ci=not args.no_ci,
        )
    )
    print(files["md"].read_text())
    command = shlex.join(["medmtl-tables", *(sys.argv[1:] if argv is None else argv)])
    if args.into:
        files["into"] = run_or_exit(publish_table, files["md"], args.into, command)
    if args.wandb:
        run_id = run_or_exit(
            log_tables_to_wandb, args.multirun_dir, table, files, args.wandb == "online", command
        )
        print(f"W&B run {run_id} ({args.wandb}) in {files['md'].parent / 'wandb'}")
    print("written: " + ", ".join(str(p) for p in files.values()))
    for problem in table.problems:
        print(f"NOT IN TABLE: {problem}", file=sys.stderr)
    return 1 if table.problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""medmtl-tables: the study's table from a multirun folder (Markdown, CSV, LaTeX and figures).

Examples:
  medmtl-tables multirun/table_lambda/<date> reference=study baseline="λ=0.7"
  medmtl-tables <sweep> columns=recipe into=docs/results.md:recipe wandb=offline
  medmtl-tables multirun/curated_cpu/<date> columns=curated reference=curated
(--reference study, --no-ci, --wandb ... are the same options.)
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from medmtl.cli.options import command_main, option_lines, parse, usage
from medmtl.settings.commands import TablesSettings

PROG = "medmtl-tables"
SYNOPSIS = "<multirun dir> [key=value ...]"


def _run(argv: list[str]) -> int:
    s = parse(argv, TablesSettings, positional="multirun_dir")
    from medmtl.workflows.tables import log_tables_to_wandb, publish_table, write_tables
    from medmtl.workflows.wandb_runs import option_request

    option_request(s.wandb, "wandb")  # online: W&B's server and a login, before any work
    folder = Path(s.folder)
    table, files = write_tables(
        folder,
        Path(s.out) if s.out else None,
        reference=s.reference,
        columns=s.columns,
        baseline=s.baseline,
        ci=s.ci,
    )
    print(files["md"].read_text())
    command = shlex.join([PROG, *argv])
    if s.into:
        files["into"] = publish_table(files["md"], s.into, command)
    if s.wandb:
        run_id = log_tables_to_wandb(folder, table, files, s.wandb == "online", command)
        print(f"W&B run {run_id} ({s.wandb}) in {files['md'].parent / 'wandb'}")
    print("written: " + ", ".join(str(p) for p in files.values()))
    for problem in table.problems:
        print(f"NOT IN TABLE: {problem}", file=sys.stderr)
    return 1 if table.problems else 0


def _help() -> str:
    return usage(PROG, __doc__, option_lines(TablesSettings, "multirun_dir"), SYNOPSIS)


def main(argv: list[str] | None = None) -> int:
    return command_main(PROG, __doc__, _run, argv, _help, exit=False)


if __name__ == "__main__":
    sys.exit(main())

"""medmtl-rehearse: every job of the study sweeps, at its full size, for two training steps.

Each job is composed as `medmtl-train -m experiment=<study> profile=gpu` would compose it and
trained by the same code on this machine's CPU (fp32, one epoch of two steps, about
2 x batch + 8 images per split), through validation, calibration, test and the run record.
The table gives each job's parameters, GFLOPs per image (forward, training step), the tensor
memory of a training step at the study's batch, and pass or the one-line reason.

Examples:
  medmtl-rehearse                                    all six studies (about an hour on 2 cores)
  medmtl-rehearse studies=[table_lambda] limit=1     one job
  medmtl-rehearse into=docs/cluster.md:rehearsal     and write the table into the docs
  medmtl-rehearse out=<folder>                       goes on where a rehearsal into it stopped
  medmtl-rehearse out=<folder> report=true           its table so far, training nothing
  medmtl-rehearse cost_from=<out>/rehearsal.csv      GPU-hours of each study, from a rehearsal
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from medmtl.cli.options import command_main, option_lines, parse, usage
from medmtl.settings.commands import RehearseSettings

PROG = "medmtl-rehearse"


def _run(argv: list[str]) -> int:
    s = parse(argv, RehearseSettings)
    from medmtl.config import compose
    from medmtl.workflows.logs import quiet_third_party
    from medmtl.workflows.rehearse import NOT_YET, rehearse
    from medmtl.workflows.tables import check_into, publish_table

    if s.into:  # a malformed FILE:SECTION before an hour of work, not after
        check_into(s.into)
    if s.cost_from:
        return _cost(s, argv)
    log_dir = Path(compose("train").paths.log_dir)
    out = Path(s.out) if s.out else log_dir / "rehearse" / time.strftime("%Y-%m-%d_%H-%M-%S")
    quiet_third_party()
    cells = rehearse(s.studies, out, s.profile, s.match, s.limit, train_new=not s.report)
    md = out / "rehearsal.md"
    print(md.read_text())
    if s.into:
        publish_table(md, s.into, shlex.join([PROG, *argv]))
    print(f"written: {out / 'rehearsal.csv'}, {md}")
    failed = [c for c in cells if not c.status.startswith("pass") and c.status != NOT_YET]
    for cell in failed:
        print(f"FAILED: {cell.name} {cell.label()}: {cell.reason}", file=sys.stderr)
    return 1 if failed else 0


def _cost(s: RehearseSettings, argv: list[str]) -> int:
    """``cost_from=<rehearsal.csv>``: the GPU cost table only."""
    import tempfile

    from medmtl.workflows.rehearse import cost_table
    from medmtl.workflows.tables import publish_table

    text = cost_table(Path(s.cost_from), s.profile)
    print(text)
    if s.into:
        with tempfile.TemporaryDirectory() as tmp:
            md = Path(tmp) / "cost.md"
            md.write_text(text)
            publish_table(md, s.into, shlex.join([PROG, *argv]))
    return 0


def _help() -> str:
    return usage(PROG, __doc__, option_lines(RehearseSettings))


def main(argv: list[str] | None = None) -> int:
    return command_main(PROG, __doc__, _run, argv, _help, needs_args=False, exit=False)


if __name__ == "__main__":
    sys.exit(main())

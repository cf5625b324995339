"""medmtl-tables: a sweep folder's table as Markdown, CSV and LaTeX, with its figures."""

from __future__ import annotations

from pathlib import Path

from medmtl.errors import ConfigError, MedmtlError
from medmtl.io.files import atomic_write_text, replace_section
from medmtl.reporting.per_image import write_predictions
from medmtl.reporting.render import render, render_grid
from medmtl.reporting.runs import collect_runs
from medmtl.reporting.study import check_reference
from medmtl.reporting.table_figures import write_table_figures
from medmtl.reporting.tables import COLUMN_SETS, Table, build_table, compare_with_baseline, find_row


def write_tables(
    multirun_dir: str | Path,
    out_dir: str | Path | None = None,
    reference: str | None = None,
    columns: str = "study",
    baseline: str | None = None,
    ci: bool = True,
    figures: bool = True,
) -> tuple[Table, dict[str, Path]]:
    """Collect the runs, build the table and write it as Markdown, CSV and LaTeX (and figures),
    with the published rows of ``reference`` (``study`` | ``curated``); a row of
    cross-validation folds also gets its pooled out-of-fold predictions written
    (``out_of_fold_predictions.csv``; ``out_of_fold_<k>.csv`` for several such rows)."""
    root = Path(multirun_dir)
    table = build_table(collect_runs(root), root)
    if reference:
        check_reference(table, reference)
    cols = COLUMN_SETS[columns]
    if baseline:
        baseline = find_row(table, baseline)
    comparisons = compare_with_baseline(table, baseline, cols) if baseline else None
    out = Path(out_dir) if out_dir else root / "tables"
    files: dict[str, Path] = {}
    for fmt in ("md", "csv", "tex"):
        text = render(table, fmt, reference, columns, ci, comparisons, baseline)
        files[fmt] = atomic_write_text(out / f"{table.kind}.{fmt}", text)
    pooled_runs = [m for _, members, _ in table.rows for m in members if m.is_out_of_fold]
    for k, run in enumerate(pooled_runs, start=1):
        name = "out_of_fold_predictions.csv" if len(pooled_runs) == 1 else f"out_of_fold_{k}.csv"
        files[f"out_of_fold_{k}"] = write_predictions(out / name, run.predictions())
    if table.kind == "arch_backbone":
        for fmt in ("md", "csv", "tex"):
            files[f"grid_{fmt}"] = atomic_write_text(
                out / f"arch_backbone_grid.{fmt}", render_grid(table, fmt)
            )
    if figures:
        files.update(write_table_figures(table, out, comparisons, baseline, cols))
    return table, files


def log_tables_to_wandb(
    multirun_dir: str | Path, table: Table, files: dict[str, Path], online: bool, command: str
) -> str:
    """The written table (its CSV: cells with their CIs, the paired differences, p-values and
    Holm-corrected significance) as a ``wandb.Table`` and its figures, in one summary run
    (job_type tables) of the sweep's W&B group (the group its runs recorded, else the sweep
    folder). Returns the run's id."""
    from medmtl.data.manifest import read_csv_rows
    from medmtl.reporting.wandb_media import figure_media, text_table
    from medmtl.workflows.wandb_runs import code_version, open_run, recorded_identity, sweep_group

    root = Path(multirun_dir)
    runs = [run for _, members, _ in table.rows for run in members]
    group = next(
        (g for r in runs if (g := recorded_identity(r.path).get("group"))), None
    ) or sweep_group(root)
    header, rows = read_csv_rows(files["csv"], (), "table")
    config = {"tables/kind": table.kind, "tables/command": command,
              "tables/sweep": str(root), "code/git_commit": code_version()}  # fmt: skip
    # beside the tables (tables/wandb), where collect_runs never looks for runs
    try:
        run = open_run("tables", f"{root.name}-tables", group, config, files["md"].parent, online)
    except Exception as exc:  # noqa: BLE001 - W&B raises its own and third-party errors
        raise MedmtlError(f"W&B: could not start the tables run ({exc}); the table files are "
                          "written.") from exc  # fmt: skip
    try:
        media = {f"tables/{table.kind}": text_table(header, [[r[h] for h in header] for r in rows])}
        media.update(figure_media([p for p in files.values() if p.suffix == ".png"]))
        run.log(media)
        return str(run.id)
    finally:
        run.finish()


def publish_table(markdown: Path, into: str, command: str) -> Path:
    """Write a table's Markdown, with the command that made it, into a marked section of a
    document (``docs/results.md:<section>``), so that results there are written by commands."""
    doc, section = check_into(into)
    body = f"```bash\n{command}\n```\n\n" + Path(markdown).read_text().strip() + "\n"
    return replace_section(doc, section, body, title="Results")


def check_into(into: str) -> tuple[Path, str]:
    """``FILE:SECTION`` as (file, section), or one line saying what it must look like."""
    doc, sep, section = into.rpartition(":")
    if not sep or not doc or not section.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(
            f"--into {into}: expected FILE:SECTION, e.g. docs/results.md:lambda_5fold "
            "(a section name of letters, digits, '_' and '-')."
        )
    return Path(doc), section


def unlike_auroc_table(inside: str | Path, others: list[str | Path]) -> str:
    """``python -m medmtl.cli.unlike``: the AUROC of the unlike-training score between the
    in-domain predictions file and each of ``others`` (:func:`medmtl.reporting.unlike.table`)."""
    from medmtl.errors import ConfigError
    from medmtl.reporting.unlike import table

    if not others:
        raise ConfigError("give the in-domain predictions file and at least one other.")
    return table(inside, others)

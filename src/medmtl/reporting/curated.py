"""The curated-BUSI study's published Table 5 (package data) as the reference beside a sweep of
its protocol (``experiment=curated``; ``medmtl-tables <sweep> reference=curated``).

Aumente-Maestro et al. (CMPB 2025) report each cell as the mean ± std over their 4 folds; the
matching medmtl row is the one pooled over its 4 fold models (mean ± std), so the difference
printed is that of the two means. The row of the pooled out-of-fold predictions has no
published counterpart (they did not pool), and gets none.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

from medmtl.errors import MedmtlError
from medmtl.reporting.runs import Run

CURATED_FILE = Path(__file__).parent / "data" / "curated_table5.csv"
CURATED_DATA = "busi_curated"  # the data set (data=busi_curated) their numbers are on
CURATED_FOLDS = 4  # their protocol's folds


@dataclass(frozen=True)
class PublishedRow:
    configuration: str
    task: str | None  # the model.task of the medmtl rows it stands beside (None: none)
    values: dict[str, tuple[float, float | None]]  # metric -> (mean, std)

    def text(self, metric: str) -> str:
        """A cell as published: ``mean ± std`` (or the mean alone)."""
        if metric not in self.values:
            return ""
        mean, std = self.values[metric]
        return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


@functools.cache
def curated_reference() -> tuple[PublishedRow, ...]:
    """Table 5's rows, in the order published."""
    lines = [ln for ln in CURATED_FILE.read_text().splitlines() if ln and not ln.startswith("#")]
    values: dict[str, dict[str, tuple[float, float | None]]] = {}
    tasks: dict[str, str] = {}
    for r in csv.DictReader(lines):
        cell = (float(r["mean"]), float(r["std"]) if r["std"] else None)
        values.setdefault(r["configuration"], {})[r["metric"]] = cell
        if r["task"]:
            tasks[r["configuration"]] = r["task"]
    return tuple(PublishedRow(name, tasks.get(name), v) for name, v in values.items())


def check_curated_allowed(runs: list[Run]) -> None:
    """``reference=curated`` compares with numbers of their protocol: refuse other runs."""
    ok = [r for r in runs if r.status == "ok"]
    other = sorted({str(r.dataset) for r in ok if r.dataset != CURATED_DATA})
    if other:
        raise MedmtlError(
            f"reference=curated: Table 5 is on curated BUSI ({CURATED_FOLDS}-fold "
            f"cross-validation), but these runs are on {', '.join(other)}; run the sweep with "
            "experiment=curated (or experiment=curated_cpu)."
        )
    folds = sorted({str(r.record.cv_folds) for r in ok if r.record.cv_folds != CURATED_FOLDS})
    if folds:
        raise MedmtlError(
            f"reference=curated: Table 5 is a {CURATED_FOLDS}-fold cross-validation, but these "
            f"runs have data.split.folds={', '.join(folds)}; run the sweep with "
            "experiment=curated (or experiment=curated_cpu)."
        )


def curated_row_for(members: list[Run]) -> PublishedRow | None:
    """The published row beside a table row: the one of its task (multi-task: their proposed
    network), for a row of fold models; None for the pooled out-of-fold row."""
    ok = next((m for m in members if m.status == "ok"), None)
    if ok is None or ok.is_ensemble or ok.is_out_of_fold:
        return None
    task = ok.record.task or "multitask"
    return next((r for r in curated_reference() if r.task == task), None)

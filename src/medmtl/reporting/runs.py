"""Reading a sweep's runs: every job folder with its command line, status and metrics."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medmtl.errors import MedmtlError
from medmtl.reporting.per_image import PerImage, read_predictions
from medmtl.settings.record import RunRecord

POOLED = {"seed", "data.fold"}  # repeats of one cell (and each data set's fold: pooled())


def pooled(key: str) -> bool:
    """Whether a command-line key only repeats a table cell: a seed or a fold (also the fold of
    a combined data set, ``data.sets.<name>.fold``)."""
    return key in POOLED or re.fullmatch(r"data\.sets\.[^.]+\.fold", key) is not None


# -- runs --------------------------------------------------------------------------------------
@dataclass
class Run:
    path: Path
    overrides: dict[str, str]
    status: str  # ok | failed | unreadable | missing
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    _predictions: PerImage | None | bool = field(default=False, repr=False)

    @property
    def record(self) -> RunRecord:
        """The run's record (its ``metrics.json``; empty for a run that did not finish)."""
        return RunRecord.from_metrics(self.metrics)

    @property
    def split(self) -> str:
        """The split the run was tested on: ``test``, or ``all`` for an evaluation of every
        image of another data set (medmtl-eval split=all)."""
        return self.record.split

    def value(self, key: str) -> Any:
        """A metric by a column's key: ``test/<metric>`` reads the run's own test split."""
        return self.record.metric(key)

    def predictions(self) -> PerImage | None:
        """The run's per-image predictions (None if it has none: an older or failed run)."""
        if self._predictions is False:
            f = self.path / f"predictions_{self.split}.csv"
            self._predictions = read_predictions(f) if self.status == "ok" and f.exists() else None
        return self._predictions  # type: ignore[return-value]

    def setting(self, name: str) -> Any:
        """A :class:`RunRecord` field of the run: recorded, else from its command line."""
        return self.record.setting(name, self.overrides)

    @property
    def is_ensemble(self) -> bool:
        return self.record.is_ensemble

    @property
    def is_out_of_fold(self) -> bool:
        """The pooled test predictions of a row's cross-validation folds
        (:func:`medmtl.reporting.tables.out_of_fold`), not one run."""
        record = self.record
        return record.cv_folds is not None and record.fold is None

    @property
    def repeat(self) -> tuple:
        """Which repeat of its cell this run is (seed, fold): runs of equal repeats are paired."""
        if self.is_ensemble:
            return ("ensemble", str(self.path))
        return (str(self.setting("seed")), str(self.setting("fold")))

    @property
    def dataset(self) -> str | None:
        name = self.record.data_name
        if name:
            return str(name)
        f = self.path / "config_resolved.yaml"
        if f.exists():
            try:
                return str(((yaml.safe_load(f.read_text()) or {}).get("data") or {}).get("name"))
            except yaml.YAMLError:
                return None
        return None


def read_overrides(job: Path) -> dict[str, str]:
    f = job / ".hydra" / "overrides.yaml"
    if not f.exists():
        return {}
    try:
        items = yaml.safe_load(f.read_text()) or []
    except yaml.YAMLError:
        return {}
    out = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def collect_runs(multirun_dir: str | Path) -> list[Run]:
    """Every job folder of a multirun (numbered sub-folders, also one level deeper)."""
    root = Path(multirun_dir)
    if not root.is_dir():
        raise MedmtlError(f"{root}: multirun folder not found.")
    jobs = sorted(
        {p.parent.parent for p in root.rglob(".hydra/overrides.yaml")}
        | {p.parent for p in root.rglob("metrics.json")}
        | {p.parent for p in root.rglob("failed.json")},
        key=lambda p: [
            (0, int(t), "") if t.isdigit() else (1, 0, t) for t in p.relative_to(root).parts
        ],
    )
    jobs = [j for j in jobs if j != root or (root / "metrics.json").exists()]
    jobs = [j for j in jobs if "tables" not in j.relative_to(root).parts]
    if not jobs:
        raise MedmtlError(
            f"{root}: no runs found (expected job folders with .hydra/overrides.yaml and "
            "metrics.json, as written by `medmtl-train -m ...`)."
        )
    runs = []
    for job in jobs:
        ov = read_overrides(job)
        m, f = job / "metrics.json", job / "failed.json"
        if m.exists():
            try:
                data = json.loads(m.read_text())
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                runs.append(Run(job, ov, "ok", metrics=data))
            except (ValueError, OSError) as exc:
                runs.append(Run(job, ov, "unreadable", f"{m}: corrupt metrics.json ({exc})"))
        elif f.exists():
            try:
                err = json.loads(f.read_text()).get("error", "")
            except (ValueError, OSError):
                err = "failed"
            runs.append(Run(job, ov, "failed", f"{job}: run failed: {err}"))
        else:
            runs.append(Run(job, ov, "missing", f"{job}: no metrics.json (run did not finish)"))
    return runs


def is_search(root: Path | None) -> bool:
    """A sweeper search (Optuna): its folder has optimization_results.yaml or says so."""
    if root is None:
        return False
    if (root / "optimization_results.yaml").exists():
        return True
    f = root / "multirun.yaml"
    return f.exists() and "optuna" in f.read_text()

"""Console summary of a run's metrics and the atomic writer of ``metrics.json`` (the run
record, :class:`medmtl.settings.record.RunRecord`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from medmtl.io.files import atomic_write_text
from medmtl.settings.record import RunRecord

MAIN_METRICS = (
    "cls_acc",
    "cls_f1",
    "cls_precision",
    "cls_recall",
    "cls_auc",
    "cls_ece",
    "cls_nll",
    "cls_brier",
    "conformal_coverage",
    "conformal_set_size",
    "seg_dice",
    "seg_iou",
    "seg_f1",
    "seg_dice_lesion",
    "seg_iou_lesion",
    "normal_fp_rate",
    "empty_lesion_rate",
    "called_normal_rate",
    "overall",
)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None  # JSON has no NaN; "not defined" is null
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically (a crash never leaves a half-written metrics file)."""
    atomic_write_text(
        path, json.dumps(_clean(data), indent=2, sort_keys=True, allow_nan=False) + "\n"
    )


def write_record(out_dir: str | Path, record: RunRecord) -> dict[str, Any]:
    """Write the run's record as ``<out_dir>/metrics.json`` (every workflow's one way) and
    return its flat form."""
    metrics = record.to_metrics()
    write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics


def metrics_table(metrics: dict[str, Any], splits: tuple[str, ...] = ("val", "test")) -> Table:
    """A rich table: one row per metric, one column per split present in ``metrics``."""
    present = [s for s in splits if any(k.startswith(f"{s}/") for k in metrics)]
    table = Table(title="medmtl metrics")
    table.add_column("metric")
    for s in present:
        table.add_column(s, justify="right")
    for name in MAIN_METRICS:
        row = [metrics.get(f"{s}/{name}") for s in present]
        if all(v is None for v in row):
            continue
        table.add_row(
            name,
            *(
                "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"
                for v in row
            ),
        )
    return table


def print_metrics(metrics: dict[str, Any], splits: tuple[str, ...] = ("val", "test")) -> None:
    Console().print(metrics_table(metrics, splits))

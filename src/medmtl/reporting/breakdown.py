"""An evaluation broken down by a per-image column: the data set, or a metadata column such as
the scanner (``medmtl-eval ... by=Device``): every metric per value, with bootstrap CIs."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from medmtl.reporting.per_image import PerImage, compute_metrics, subset
from medmtl.reporting.statistics import N_BOOT, Interval, bootstrap_ci

# the columns of a breakdown table: (header, metric); a metric the evaluation lacks is left out
COLUMNS = (
    ("Acc", "cls_acc"),
    ("F1", "cls_f1"),
    ("AUC", "cls_auc"),
    ("Dice lesion", "seg_dice_lesion"),
    ("IoU lesion", "seg_iou_lesion"),
    ("Dice", "seg_dice"),
    ("normal FP", "normal_fp_rate"),
    # lesion images whose final mask is empty: detection, not only Dice (issue 21)
    ("lesions empty", "empty_lesion_rate"),
    ("lesion sens", "lesion_sensitivity"),
    # the trust layer, where it holds and where not: calibration, the conformal guarantee
    # (coverage against its nominal 1 - alpha) and how often the model hands the image over
    ("ECE", "cls_ece"),
    ("coverage", "conformal_coverage"),
    ("set size", "conformal_set_size"),
    ("refer", "refer_rate"),
)


@dataclass
class Group:
    column: str
    value: str
    n: int
    metrics: dict[str, float]
    ci: dict[str, Interval]


def breakdown(p: PerImage, column: str, n_boot: int = N_BOOT, seed: int = 0) -> list[Group]:
    """The evaluation for each value of ``column``, in value order."""
    values = p.column(column)
    out = []
    for value in sorted(set(values)):
        part = subset(p, [v == value for v in values])
        metrics = {
            k: float(v[0]) for k, v in compute_metrics(part).items() if k != "confusion_matrix"
        }
        out.append(
            Group(
                column, value, len(part), metrics, bootstrap_ci(part, list(metrics), n_boot, seed)
            )
        )
    return out


def flat_metrics(groups: list[Group], split: str) -> dict[str, float]:
    """``metrics.json`` keys: ``<split>/<column>=<value>/<metric>`` and ``.../n``."""
    out: dict[str, float] = {}
    for g in groups:
        prefix = f"{split}/{g.column}={g.value}"
        out[f"{prefix}/n"] = g.n
        out.update({f"{prefix}/{k}": v for k, v in g.metrics.items()})
    return out


def _columns(groups: list[Group]) -> list[tuple[str, str]]:
    have = set().union(*(g.metrics for g in groups)) if groups else set()
    cols = [(h, k) for h, k in COLUMNS if k in have]
    called = sorted(k for k in have if k.startswith("called_"))
    cols += [(k.removesuffix("_rate").replace("_", " "), k) for k in called]
    return cols


def render(groups: list[Group], fmt: str = "md", coverage: float | None = None) -> str:
    """The breakdown as a Markdown table (value [95 % CI]) or CSV (value, low, high).
    ``coverage``: the answer sets' nominal coverage (1 - alpha); a Markdown coverage cell
    whose whole CI lies below it is marked, since the guarantee does not hold there."""
    cols = _columns(groups)
    column = groups[0].column if groups else "value"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([column, "n", *[x for h, _ in cols for x in (h, f"{h} low", f"{h} high")]])
        for g in groups:
            row: list = [g.value, g.n]
            for _, k in cols:
                iv = g.ci.get(k)
                row += (
                    [f"{g.metrics[k]:.6f}", f"{iv.low:.6f}", f"{iv.high:.6f}"]
                    if iv
                    else ["", "", ""]
                )
            w.writerow(row)
        return buf.getvalue()
    lines = [
        f"| {column} | n | " + " | ".join(h for h, _ in cols) + " |",
        "|" + "---|" * (len(cols) + 2),
    ]
    below = False
    for g in groups:
        cells = []
        for _, k in cols:
            cell = g.ci[k].text() if k in g.ci else f"{g.metrics[k]:.3f}"
            if k == "conformal_coverage" and coverage is not None and g.ci[k].high < coverage:
                cell += " **below**"
                below = True
            cells.append(cell)
        lines.append(f"| {g.value} | {g.n} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: value [95 % bootstrap CI over the images of that row]."]
    if coverage is not None and any(k == "conformal_coverage" for _, k in cols):
        lines.append(
            f"Conformal coverage is guaranteed at {coverage:g} on images like the calibration "
            "images; **below**: the whole CI lies under it, so the guarantee does not hold there."
            if below
            else f"Nominal conformal coverage: {coverage:g}; no row's CI lies wholly below it."
        )
    return "\n".join(lines) + "\n"

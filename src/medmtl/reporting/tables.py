"""Study tables from a multirun folder: every cell comes from the runs' ``metrics.json``.

Rows are the combinations of the swept settings (seeds and folds are pooled into mean ± std);
columns follow the study's layout. Failed, missing or unreadable runs are shown as such and
listed, never counted as zeros.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medmtl.errors import MedmtlError


@dataclass(frozen=True)
class Column:
    header: str
    key: str  # metrics.json key
    higher: bool | None = True  # higher is better (None: no best value to mark)
    scale: float = 1.0  # shown value = scale * stored value
    digits: int = 3


COLUMN_SETS = {
    # the study's layout
    "study": [
        Column("Acc", "test/cls_acc"),
        Column("F1", "test/cls_f1"),
        Column("Prec", "test/cls_precision"),
        Column("Rec", "test/cls_recall"),
        Column("IoU", "test/seg_iou"),
        Column("Dice", "test/seg_dice"),
        Column("seg-F1", "test/seg_f1"),
        Column("Overall", "test/overall"),
        Column("AUC", "test/cls_auc"),
        Column("Dice lesion", "test/seg_dice_lesion"),
        Column("normal FP", "test/normal_fp_rate", higher=False),
    ],
    # a training recipe: the validation score it is chosen by, test quality, cost and memory
    "recipe": [
        Column("val overall", "val/overall"),
        Column("Acc", "test/cls_acc"),
        Column("F1", "test/cls_f1"),
        Column("AUC", "test/cls_auc"),
        Column("Dice lesion", "test/seg_dice_lesion"),
        Column("IoU lesion", "test/seg_iou_lesion"),
        Column("Dice", "test/seg_dice"),
        Column("normal FP", "test/normal_fp_rate", higher=False),
        Column("epochs", "epochs", higher=None, digits=1),
        Column("wall min", "wall_time_s", higher=False, scale=1 / 60, digits=1),
        Column("peak RSS GB", "peak_rss_mb", higher=False, scale=1 / 1024, digits=2),
    ],
}
COLUMNS = COLUMN_SETS["study"]
POOLED = {"seed", "data.fold"}  # repeats of one cell
# The study's published numbers (DESIGN.md), by λ and by architecture + backbone.
STUDY_LAMBDA = {
    0.1: [0.713, 0.663, 0.705, 0.642, 0.604, 0.663, 0.679, 0.656],
    0.3: [0.783, 0.669, 0.745, 0.635, 0.679, 0.743, 0.759, 0.698],
    0.5: [0.828, 0.618, 0.669, 0.586, 0.693, 0.758, 0.774, 0.680],
    0.7: [0.834, 0.658, 0.707, 0.628, 0.703, 0.766, 0.782, 0.704],
    0.9: [0.637, 0.594, 0.662, 0.573, 0.690, 0.771, 0.771, 0.669],
}
# the published numbers are given for these keys, in this order
STUDY_KEYS = [c.key for c in COLUMN_SETS["study"][:8]]
STUDY_ARCH = {  # Acc, F1, Prec, Rec, IoU, Dice, seg-F1 (no Overall given)
    ("unet", "efficientnet_b4"): [0.904, 0.723, 0.754, 0.701, 0.749, 0.817, 0.817, None],
    ("deeplabv3plus", "efficientnet_b4"): [0.892, 0.694, 0.726, 0.672, 0.798, 0.813, 0.864, None],
    ("unetplusplus", "resnext50_32x4d"): [0.822, 0.651, 0.704, 0.621, 0.760, 0.771, 0.838, None],
}


@dataclass
class Run:
    path: Path
    overrides: dict[str, str]
    status: str  # ok | failed | unreadable | missing
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


def _overrides(job: Path) -> dict[str, str]:
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
        key=lambda p: [int(t) if t.isdigit() else t for t in p.relative_to(root).parts],
    )
    jobs = [j for j in jobs if j != root or (root / "metrics.json").exists()]
    if not jobs:
        raise MedmtlError(
            f"{root}: no runs found (expected job folders with .hydra/overrides.yaml and "
            "metrics.json, as written by `medmtl-train -m ...`)."
        )
    runs = []
    for job in jobs:
        ov = _overrides(job)
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


def _fmt_key(key: str, value: str, run: Run | None) -> str:
    if key == "loss.seg_weight":
        return f"λ={value}"
    if key == "model/encoder" and run is not None and run.status == "ok":
        used, study = run.metrics.get("model/encoder"), run.metrics.get("model/encoder_study")
        if used and study and used != study and not study.endswith(used):
            return f"{value} (CPU stand-in: {used})"
    return value


@dataclass
class Table:
    kind: str
    row_keys: list[str]
    rows: list[tuple[str, list[Run], dict[str, str]]]  # label, runs, key values
    problems: list[str]


def build_table(runs: list[Run]) -> Table:
    keys = sorted({k for r in runs for k in r.overrides} - POOLED)
    varying = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]
    order = [
        "model.task",
        "model/arch",
        "model/encoder",
        "loss.seg",
        "loss.cls",
        "loss.weighting",
        "loss.seg_weight",
    ]
    varying.sort(key=lambda k: order.index(k) if k in order else len(order))
    if any(k not in r.overrides for r in runs for k in varying):
        kind = "runs"  # not one sweep: single runs that each change something else
    elif "loss.seg_weight" in varying and len(varying) == 1:
        kind = "lambda"
    elif {"model/arch", "model/encoder"} & set(varying) and "model.task" not in varying:
        kind = "arch_backbone"
    elif "model.task" in varying:
        kind = "stl_vs_mtl"
    elif any(k.startswith("loss.") for k in varying):
        kind = "loss_ablation"
    else:
        kind = "runs"
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault(tuple(r.overrides.get(k, "") for k in varying), []).append(r)

    def sort_key(item):
        out = []
        for v in item[0]:
            try:
                out.append((0, float(v), ""))
            except ValueError:
                out.append((1, 0.0, v))
        return out

    rows = []
    for values, members in sorted(groups.items(), key=sort_key):
        ok = next((m for m in members if m.status == "ok"), None)
        if kind == "runs":  # unrelated settings: name each row by what it sets
            label = ", ".join(f"{k}={v}" for k, v in zip(varying, values, strict=True) if v)
            label = label or ("all runs" if not varying else "baseline (none of these set)")
        else:
            label = (
                " + ".join(_fmt_key(k, v, ok) for k, v in zip(varying, values, strict=True))
                or "all runs"
            )
        rows.append((label, members, dict(zip(varying, values, strict=True))))
    problems = [r.reason for r in runs if r.status != "ok"]
    return Table(kind, varying, rows, problems)


def _cell(members: list[Run], col: Column) -> tuple[str, float | None]:
    values = [m.metrics.get(col.key) for m in members if m.status == "ok"]
    if not any(m.status == "ok" for m in members):
        return ("failed", None)
    values = [
        v * col.scale
        for v in values
        if isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v))
    ]
    if not values:
        return ("—", None)
    mean = statistics.fmean(values)
    if len(values) > 1:
        return (f"{mean:.{col.digits}f} ± {statistics.stdev(values):.{col.digits}f}", mean)
    return (f"{mean:.{col.digits}f}", mean)


def table_cells(
    table: Table, columns: list[Column] = COLUMNS
) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Header, cell texts and bold flags (best mean per column)."""
    header = ["setting", *[c.header for c in columns], "runs"]
    texts, means = [], []
    for label, members, _ in table.rows:
        cells = [_cell(members, col) for col in columns]
        ok = sum(m.status == "ok" for m in members)
        texts.append([label, *[c[0] for c in cells], f"{ok}/{len(members)}"])
        means.append([c[1] for c in cells])
    bold = [[False] * len(header) for _ in texts]
    for j, col in enumerate(columns):
        values = [(m[j], i) for i, m in enumerate(means) if m[j] is not None]
        if len(values) > 1 and col.higher is not None:
            best = (max if col.higher else min)(v for v, _ in values)
            for v, i in values:
                if v == best:
                    bold[i][j + 1] = True
    return header, texts, bold


def reference_rows(
    table: Table, columns: list[Column] = COLUMNS
) -> list[tuple[int, list[str], list[str]]]:
    """(row index, study row, difference row) for rows that have a published counterpart."""
    out = []
    for i, (_, members, values) in enumerate(table.rows):
        ref = None
        if table.kind == "lambda":
            try:
                ref = STUDY_LAMBDA.get(round(float(values.get("loss.seg_weight", "nan")), 2))
            except ValueError:
                ref = None
        elif table.kind == "arch_backbone":
            ref = STUDY_ARCH.get((values.get("model/arch", ""), values.get("model/encoder", "")))
        if ref is None:
            continue
        published = dict(zip(STUDY_KEYS, ref, strict=False))
        study, diff = ["study (published)"], ["Δ ours − study"]
        for col in columns:
            v = published.get(col.key)
            _, mean = _cell(members, col)
            study.append(f"{v:.3f}" if v is not None else "")
            diff.append(f"{mean - v:+.3f}" if (v is not None and mean is not None) else "")
        out.append((i, study + [""], diff + [""]))
    return out


def render(table: Table, fmt: str, reference: bool = False, columns: str = "study") -> str:
    """The table as ``md``, ``csv`` or ``tex``, with the column set ``columns``."""
    cols = COLUMN_SETS[columns]
    header, texts, bold = table_cells(table, cols)
    refs = {i: (s, d) for i, s, d in reference_rows(table, cols)} if reference else {}
    rows: list[tuple[list[str], list[bool]]] = []
    for i, row in enumerate(texts):
        rows.append((row, bold[i]))
        if i in refs:
            rows.append((refs[i][0], [False] * len(row)))
            rows.append((refs[i][1], [False] * len(row)))
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row, b in rows:
            lines.append(
                "| "
                + " | ".join(f"**{c}**" if f else c for c, f in zip(row, b, strict=True))
                + " |"
            )
        return "\n".join(lines) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        for row, _ in rows:
            w.writerow(row)
        return buf.getvalue()
    if fmt == "tex":

        def esc(s: str) -> str:
            return (
                s.replace("±", r"$\pm$")
                .replace("λ", r"$\lambda$")
                .replace("Δ", r"$\Delta$")
                .replace("_", r"\_")
                .replace("−", "-")
                .replace("&", r"\&")
            )

        lines = [
            r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
            r"\toprule",
            " & ".join(esc(h) for h in header) + r" \\",
            r"\midrule",
        ]
        for row, b in rows:
            lines.append(
                " & ".join(
                    r"\textbf{" + esc(c) + "}" if f else esc(c) for c, f in zip(row, b, strict=True)
                )
                + r" \\"
            )
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown format {fmt}")


def write_tables(
    multirun_dir: str | Path,
    out_dir: str | Path | None = None,
    reference: bool = False,
    columns: str = "study",
) -> tuple[Table, dict[str, Path]]:
    """Collect the runs, build the table and write it as Markdown, CSV and LaTeX."""
    table = build_table(collect_runs(multirun_dir))
    out = Path(out_dir) if out_dir else Path(multirun_dir) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for fmt in ("md", "csv", "tex"):
        path = out / f"{table.kind}.{fmt}"
        path.write_text(render(table, fmt, reference, columns))
        files[fmt] = path
    return table, files

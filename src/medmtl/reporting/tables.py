"""Study tables from a multirun folder: rows, cells and their statistics, every cell from the runs'
own files (reading runs: :mod:`.runs`; the study's reference: :mod:`.study`; output:
:mod:`.render`).

Rows are the combinations of the swept settings (seeds and folds are pooled); columns follow
the study's layout. Point values come from ``metrics.json``; confidence intervals and paired
comparisons from the runs' per-image ``predictions_test.csv`` (:mod:`.statistics`). Failed,
missing or unreadable runs are shown as such and listed, never counted as zeros.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from medmtl.errors import DataError, MedmtlError
from medmtl.reporting.per_image import PerImage, compute_metrics, concat, metrics_dict
from medmtl.reporting.runs import Run, is_search, pooled
from medmtl.reporting.statistics import (
    N_BOOT,
    Difference,
    Interval,
    bootstrap_ci,
    holm,
    mean_ci,
    paired_differences,
)
from medmtl.settings.record import RunRecord


@dataclass(frozen=True)
class Column:
    header: str
    key: str  # metrics.json key
    higher: bool | None = True  # higher is better (None: no best value to mark)
    scale: float = 1.0  # shown value = scale * stored value
    digits: int = 3
    bounded: bool = True  # the metric is at most 1 (a t-interval is clipped to [0, 1])

    @property
    def metric(self) -> str | None:
        """The per-image metric name when the column is a test metric (CIs and tests apply)."""
        return self.key.removeprefix("test/") if self.key.startswith("test/") else None


# what a run cost: shown beside the quality of a recipe
COST_COLUMNS = [
    Column("epochs", "epochs", higher=None, digits=1),
    Column("wall min", "wall_time_s", higher=False, scale=1 / 60, digits=1),
    Column("peak RSS GB", "peak_rss_mb", higher=False, scale=1 / 1024, digits=2),
]
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
        # lesion images left with an empty mask; on a data set without the normal class, the
        # images the model called normal (issue 21: report detection, not only Dice)
        Column("lesions empty", "test/empty_lesion_rate", higher=False),
        Column("called normal", "test/called_normal_rate", higher=False),
        *COST_COLUMNS,
    ],
    # beside the curated-BUSI study's Table 5 (reference=curated): its Dice per true class
    # (an empty truth scores 1 if the prediction is empty, else 0), its DSC avg (= seg_dice),
    # weighted F1 and accuracy, then medmtl's lesion Dice, detection and AUC
    "curated": [
        Column("DSC benign", "test/seg_dice_benign"),
        Column("DSC malignant", "test/seg_dice_malignant"),
        Column("DSC normal", "test/seg_dice_normal"),
        Column("DSC avg", "test/seg_dice"),
        Column("F1 weighted", "test/cls_f1_weighted"),
        Column("ACC", "test/cls_acc"),
        Column("Dice lesion", "test/seg_dice_lesion"),
        Column("lesions empty", "test/empty_lesion_rate", higher=False),
        Column("normal FP", "test/normal_fp_rate", higher=False),
        Column("AUC", "test/cls_auc"),
    ],
    # finding lesions: lesion-level detection, by lesion size (docs/metrics.md)
    "lesions": [
        Column("Dice lesion", "test/seg_dice_lesion"),
        Column("lesion sens", "test/lesion_sensitivity"),
        Column("FP / image", "test/fp_per_image", higher=False, digits=2, bounded=False),
        Column("FROC CPM", "test/lesion_froc_cpm"),
        Column("HD95 px", "test/seg_hd95_lesion", higher=False, digits=1, bounded=False),
        Column("NSD", "test/seg_nsd_lesion"),
        Column("lesions empty", "test/empty_lesion_rate", higher=False),
        Column("normal FP", "test/normal_fp_rate", higher=False),
        Column("sens small", "test/lesion_sensitivity_small"),
        Column("sens medium", "test/lesion_sensitivity_medium"),
        Column("sens large", "test/lesion_sensitivity_large"),
        Column("Dice small", "test/lesion_dice_small"),
        Column("Dice medium", "test/lesion_dice_medium"),
        Column("Dice large", "test/lesion_dice_large"),
    ],
    # how sure the model says it is, against how often it is right (lower is better)
    "calibration": [
        Column("Acc", "test/cls_acc"),
        Column("ECE", "test/cls_ece", higher=False),
        Column("NLL", "test/cls_nll", higher=False),
        Column("Brier", "test/cls_brier", higher=False),
        # conformal answer sets: the share holding the true class, and their mean size
        Column("coverage", "test/conformal_coverage", higher=None),
        Column("set size", "test/conformal_set_size", higher=False),
        Column("AURC", "test/cls_aurc", higher=False),
        Column("error at 80 %", "test/cls_error_at_80", higher=False),
        Column("val ECE before", "calibration/val_ece_before", higher=False),
        Column("val ECE after", "calibration/val_ece_after", higher=False),
        Column("T", "calibration/temperature", higher=None, digits=2),
    ],
    # choosing settings: validation scores only (the test split is looked at once, at the end)
    "validation": [
        Column("val overall", "val/overall"),
        Column("val Acc", "val/cls_acc"),
        Column("val F1", "val/cls_f1"),
        Column("val AUC", "val/cls_auc"),
        Column("val Dice", "val/seg_dice"),
        Column("val Dice lesion", "val/seg_dice_lesion"),
        Column("val normal FP", "val/normal_fp_rate", higher=False),
        Column("val lesions empty", "val/empty_lesion_rate", higher=False),
        *COST_COLUMNS,
    ],
}
COLUMNS = COLUMN_SETS["study"]
TITLES = {
    "lambda": "λ table (study table 1, Q2)",
    "arch_backbone": "Architecture × backbone (study table 2, Q3)",
    "stl_vs_mtl": "Single-task vs multi-task (Q4/Q5)",
    "loss_ablation": "Loss ablation (Q1/Q8)",
    "search": "Hyper-parameter search",
    "ensemble": "Ensembles",
    "lodo": "Leave one data set out (test on every image of the data set left out)",
    "runs": "Runs",
}
SIG_MARK = "†"


# -- rows ---------------------------------------------------------------------------------------
def _encoder_label(value: str, run: Run | None) -> str:
    """The encoder as swept, with the stand-in that ran and whether it was pretrained."""
    if run is None or run.status != "ok":
        return value
    used, study = run.metrics.get("model/encoder"), run.metrics.get("model/encoder_study")
    notes = []
    if used and study and used != study and not str(study).endswith(str(used)):
        notes.append(f"CPU stand-in: {used}")
    if "model/encoder_weights" in run.metrics:
        notes.append(f"weights: {run.metrics['model/encoder_weights'] or 'random init'}")
    elif "model/encoder" in run.metrics:  # a run from before the weights were recorded
        notes.append("weights: ?")
    return f"{value} ({'; '.join(notes)})" if notes else value


def _fmt_key(key: str, value: str, run: Run | None) -> str:
    if key == "loss.seg_weight":
        return f"λ={value}"
    if key == "data.leave_out":
        return f"test on {value} (trained on the others)"
    if key == "model/encoder":
        return _encoder_label(value, run)
    if key in ("model/arch", "model.task"):
        return value
    return f"{key}={value}"


@dataclass
class Table:
    kind: str
    row_keys: list[str]
    rows: list[tuple[str, list[Run], dict[str, str]]]  # label, runs, key values
    problems: list[str]
    constant: dict[str, str] = field(default_factory=dict)  # settings shared by every run

    @property
    def title(self) -> str:
        return TITLES.get(self.kind, self.kind)

    def labels(self) -> list[str]:
        return [r[0] for r in self.rows]


ORDER = [
    "model.task",
    "model/arch",
    "model/encoder",
    "loss.seg",
    "loss.cls",
    "loss.weighting",
    "loss.seg_weight",
]


OUT_OF_FOLD = "out-of-fold, pooled"  # the label of a row's pooled cross-validation folds


def out_of_fold(members: list[Run]) -> Run | None:
    """A row's cross-validation folds (``data.split.folds``: each fold model tested on its own
    fold) as one evaluation of every image, each predicted by the model that did not see it:
    their test predictions joined. None unless the row holds each of the K folds once, all
    finished with their predictions (a failed fold is listed among the table's problems)."""
    ok = [m for m in members if m.status == "ok" and not m.is_ensemble]
    folds = ok[0].record.cv_folds if ok else None
    if not folds or len(ok) != len(members):
        return None
    records = [m.record for m in ok]
    if sorted(r.fold for r in records if r.cv_folds == folds) != list(range(int(folds))):
        return None
    parts = [m.predictions() for m in sorted(ok, key=lambda m: m.record.fold)]
    if any(p is None for p in parts):
        return None
    pooled_p = concat(parts)  # type: ignore[arg-type]
    first = records[0]
    record = RunRecord(
        **{
            name: getattr(first, name)
            for name in (
                "data_name",
                "image_size",
                "cv_folds",
                "arch",
                "encoder",
                "encoder_weights",
                "encoder_study",
                "task",
                "seed",
                "seg_weight",
            )
        },
        num_images=len(pooled_p),
        values=metrics_dict(pooled_p, "test"),
    )
    path = ok[0].path.parent / f"out_of_fold_{'_'.join(m.path.name for m in ok)}"
    return Run(
        path, dict(ok[0].overrides), "ok", metrics=record.to_metrics(), _predictions=pooled_p
    )


def build_table(runs: list[Run], root: Path | None = None) -> Table:
    """Rows from the runs' settings; ensembles (medmtl-ensemble) follow the row they average,
    and a row of cross-validation folds is followed by their pooled out-of-fold evaluation."""
    ensembles = [r for r in runs if r.is_ensemble]
    table = _build_rows([r for r in runs if not r.is_ensemble] or ensembles, root)
    for at in reversed(range(len(table.rows))):
        label, members, values = table.rows[at]
        pooled_run = out_of_fold(members)
        if pooled_run is not None:
            n, folds = pooled_run.record.num_images, pooled_run.record.cv_folds
            if label == "all runs":  # the sweep is the folds alone: say so
                label = f"{folds}-fold cross-validation, per fold"
                table.rows[at] = (label, members, values)
            table.rows.insert(
                at + 1, (f"{label} · {OUT_OF_FOLD} ({n} images)", [pooled_run], values)
            )
    if len(ensembles) == len(runs):
        return table
    for ens in ensembles:
        settings = {str(k): str(v) for k, v in (ens.record.member_overrides or {}).items()}
        values = {k: settings.get(k, "") for k in table.row_keys}
        at = next((i for i, (_, _, v) in enumerate(table.rows) if v == values), len(table.rows) - 1)
        base = table.rows[at][0] if table.rows[at][2] == values else "?"
        label = f"{base} · ensemble of {ens.record.ensemble_size}"
        ens.overrides = dict(settings)
        table.rows.insert(at + 1, (label, [ens], values))
    return table


def _build_rows(runs: list[Run], root: Path | None = None) -> Table:
    keys = sorted({k for r in runs for k in r.overrides if not pooled(k)})
    varying = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]
    constant = {
        k: runs[0].overrides[k]
        for k in keys
        if k not in varying and all(k in r.overrides for r in runs)
    }
    varying.sort(key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER))
    if any(k not in r.overrides for r in runs for k in varying):
        kind = "runs"  # not one sweep: single runs that each change something else
    elif is_search(root):
        kind = "search"
    elif varying == ["loss.seg_weight"]:
        kind = "lambda"
    elif varying == ["data.leave_out"]:
        kind = "lodo"
    elif varying and set(varying) <= {"model/arch", "model/encoder"}:
        kind = "arch_backbone"
    elif "model.task" in varying and set(varying) <= {"model.task", "model/encoder", "model/arch"}:
        kind = "stl_vs_mtl"
    elif varying and all(k.startswith("loss.") for k in varying):
        kind = "loss_ablation"
    else:
        kind = "runs"
    # a setting shared by the whole sweep still names the rows where it says what they are
    shown = list(varying)
    if kind in ("arch_backbone", "stl_vs_mtl"):
        shown += [k for k in ("model/arch", "model/encoder") if k in constant]
        shown.sort(key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER))
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
        settings = {**constant, **dict(zip(varying, values, strict=True))}
        if kind == "runs":  # unrelated settings: name each row by what it sets
            label = ", ".join(f"{k}={v}" for k, v in zip(varying, values, strict=True) if v)
            label = label or ("all runs" if not varying else "baseline (none of these set)")
        else:
            label = " + ".join(_fmt_key(k, settings[k], ok) for k in shown) or "all runs"
        rows.append((label, members, dict(zip(varying, values, strict=True))))
    problems = [r.reason for r in runs if r.status != "ok"]
    return Table(kind, varying, rows, problems, constant)


# -- cells ----------------------------------------------------------------------------------------
@dataclass
class Cell:
    text: str
    mean: float | None = None
    ci: Interval | None = None


def _values(members: list[Run], col: Column) -> list[float]:
    out = []
    for m in members:
        if m.status != "ok":
            continue
        v = m.value(col.key)
        if isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v)):
            out.append(v * col.scale)
    return out


_CI_CACHE: dict[tuple, dict[str, Interval]] = {}


def _run_ci(run: Run, n_boot: int, seed: int) -> dict[str, Interval]:
    # keyed by the run folder; its predictions do not change while the tables are made
    key = (run.path, run.split, n_boot, seed)
    if key not in _CI_CACHE:
        p = run.predictions()
        _CI_CACHE[key] = bootstrap_ci(p, list(compute_metrics(p)), n_boot=n_boot, seed=seed)
    return _CI_CACHE[key]


def pooled_cell(members: list[Run], col: Column, ci: bool = False, seed: int = 0) -> Cell:
    if not any(m.status == "ok" for m in members):
        return Cell("failed")
    values = _values(members, col)
    if not values:
        return Cell("—")
    d = col.digits
    mean = statistics.fmean(values)
    if len(values) > 1:
        text = f"{mean:.{d}f} ± {statistics.stdev(values):.{d}f}"
        interval = None
        if ci and col.metric:  # a t-interval of 2 runs can overshoot a metric's [0, 1]
            iv = mean_ci(values)[2]
            high = min(1.0, iv.high) if col.bounded else iv.high  # every metric is ≥ 0
            interval = Interval(iv.value, max(0.0, iv.low), high)
    else:
        text = f"{mean:.{d}f}"
        interval = None
        run = next(m for m in members if m.status == "ok")
        if ci and col.metric and run.predictions() is not None:
            interval = _run_ci(run, N_BOOT, seed).get(col.metric)
    if interval is not None and math.isfinite(interval.low):
        text += f" [{interval.low:.{d}f}, {interval.high:.{d}f}]"
    return Cell(text, mean, interval)


def table_cells(
    table: Table, columns: list[Column] = COLUMNS, ci: bool = False, seed: int = 0
) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Header, cell texts and bold flags (best mean per column).

    With ``ci`` each quality cell also shows its 95 % CI: bootstrap over the test images for a
    single run, the t-interval of the mean for a cell pooled over seeds or folds.
    """
    header = ["setting", *[c.header for c in columns], "runs"]
    texts, means = [], []
    for label, members, _ in table.rows:
        cells = [pooled_cell(members, col, ci, seed) for col in columns]
        ok = sum(m.status == "ok" for m in members)
        texts.append([label, *[c.text for c in cells], f"{ok}/{len(members)}"])
        means.append([c.mean for c in cells])
    bold = [[False] * len(header) for _ in texts]
    # a row's pooled out-of-fold evaluation is the same models again, not a rival to mark
    rivals = [i for i, (_, members, _) in enumerate(table.rows) if not members[0].is_out_of_fold]
    for j, col in enumerate(columns):
        values = [(means[i][j], i) for i in rivals if means[i][j] is not None]
        if len(values) > 1 and col.higher is not None:
            best = (max if col.higher else min)(v for v, _ in values)
            for v, i in values:
                if v == best:
                    bold[i][j + 1] = True
    return header, texts, bold


# -- paired comparisons with a baseline row -----------------------------------------------------
@dataclass
class Comparison:
    row: int
    label: str
    paired: bool
    diffs: dict[str, Difference]  # metric -> difference (Holm-corrected)
    note: str = ""


def find_row(table: Table, text: str) -> str:
    """The row label ``text`` names: the label itself, or the one row it is the start of.

    Where several rows start with ``text`` and the shortest is the start of all others (a row
    and its ensemble row), the shortest is meant.
    """
    labels = table.labels()
    if text in labels:
        return text
    hits = sorted((x for x in labels if x.startswith(text)), key=len)
    if hits and all(h.startswith(hits[0]) for h in hits):
        return hits[0]
    raise MedmtlError(
        f"--baseline {text!r} is not a row of this table; choose one of: "
        + "; ".join(repr(x) for x in labels)
        + "."
    )


def compare_with_baseline(
    table: Table,
    baseline: str,
    columns: list[Column] = COLUMNS,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> list[Comparison]:
    """Every other row minus the baseline row, for every test-metric column, Holm-corrected."""
    labels = table.labels()
    b_idx = labels.index(find_row(table, baseline))
    keys = [c.metric for c in columns if c.metric]

    def predictions(members: list[Run]) -> dict[tuple, PerImage] | str:
        out = {}
        for m in members:
            if m.status != "ok":
                continue
            p = m.predictions()
            if p is None:
                return (
                    f"{m.path}: no predictions_{m.split}.csv (a run from before medmtl wrote them)"
                )
            out[m.repeat] = p
        return out or "no finished run"

    base = predictions(table.rows[b_idx][1])
    if isinstance(base, str):
        raise MedmtlError(f"--baseline {baseline!r}: {base}; re-evaluate it with medmtl-eval.")
    comparisons = []
    for i, (label, members, _) in enumerate(table.rows):
        if i == b_idx:
            continue
        runs = predictions(members)
        if isinstance(runs, str):
            comparisons.append(Comparison(i, label, False, {}, runs))
            continue
        paired = set(runs) == set(base) and len(runs) > 1
        order = sorted(base) if paired else None
        # "overall" is F1, Dice or their mean depending on the task: compare it within a task only
        same_task = next(iter(runs.values())).task == next(iter(base.values())).task
        row_keys = [k for k in keys if same_task or k != "overall"]
        try:
            diffs = paired_differences(
                [runs[k] for k in order] if paired else list(runs.values()),
                [base[k] for k in order] if paired else list(base.values()),
                row_keys,
                paired,
                n_boot,
                seed,
            )
        except DataError as exc:
            comparisons.append(Comparison(i, label, False, {}, str(exc)))
            continue
        comparisons.append(Comparison(i, label, paired, diffs))
    for key in keys:  # Holm over the rows, per metric
        have = [c for c in comparisons if key in c.diffs]
        for c, ph in zip(have, holm([c.diffs[key].p for c in have]), strict=True):
            d = c.diffs[key]
            c.diffs[key] = Difference(d.key, d.ci, d.p, d.paired, ph)
    return comparisons


def _pfmt(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}" if p < 0.1 else f"= {p:.2f}"


def comparison_sentences(
    comparisons: list[Comparison], baseline: str, columns: list[Column] = COLUMNS
) -> list[str]:
    """One sentence per row compared with the baseline, metric by metric."""
    out = []
    for c in comparisons:
        if c.note:
            out.append(f"{c.label} vs {baseline}: not compared ({c.note}).")
            continue
        parts = []
        for col in columns:
            d = c.diffs.get(col.metric or "")
            if d is None:
                continue
            verdict = "significant" if d.significant else "not significant"
            parts.append(
                f"{col.header} {d.ci.text(3, signed=True)}, p {_pfmt(d.p)} "
                f"(Holm {_pfmt(d.p_holm).lstrip('= ')}), {verdict}"
            )
        how = "paired by seed/fold" if c.paired else "runs averaged per row"
        out.append(f"{c.label} vs {baseline} ({how}): " + "; ".join(parts) + ".")
    return out

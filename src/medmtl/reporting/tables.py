"""Study tables from a multirun folder: every cell comes from the runs' own files.

Rows are the combinations of the swept settings (seeds and folds are pooled); columns follow
the study's layout. Point values come from ``metrics.json``; confidence intervals and paired
comparisons from the runs' per-image ``predictions_test.csv`` (:mod:`.statistics`). Failed,
missing or unreadable runs are shown as such and listed, never counted as zeros.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medmtl.errors import DataError, MedmtlError
from medmtl.reporting.per_image import PerImage, compute_metrics, read_predictions
from medmtl.reporting.statistics import (
    N_BOOT,
    Difference,
    Interval,
    bootstrap_ci,
    holm,
    mean_ci,
    paired_differences,
)


@dataclass(frozen=True)
class Column:
    header: str
    key: str  # metrics.json key
    higher: bool | None = True  # higher is better (None: no best value to mark)
    scale: float = 1.0  # shown value = scale * stored value
    digits: int = 3

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
POOLED = {"seed", "data.fold"}  # repeats of one cell (and each data set's fold: pooled())


def pooled(key: str) -> bool:
    """Whether a command-line key only repeats a table cell: a seed or a fold (also the fold of
    a combined data set, ``data.sets.<name>.fold``)."""
    return key in POOLED or re.fullmatch(r"data\.sets\.[^.]+\.fold", key) is not None


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

# -- the study's published tables (package data, copied from the study) --------------------------
STUDY_FILE = Path(__file__).parent / "data" / "study_tables.csv"
STUDY_FIELDS = {  # study_tables.csv column -> metrics.json key
    "acc": "test/cls_acc",
    "f1": "test/cls_f1",
    "precision": "test/cls_precision",
    "recall": "test/cls_recall",
    "iou": "test/seg_iou",
    "dice": "test/seg_dice",
    "seg_f1": "test/seg_f1",
    "overall": "test/overall",
}
ARCH_NAMES = {  # smp name (lower case) -> the study's name
    "unet": "Unet",
    "unetplusplus": "Unet++",
    "fpn": "FPN",
    "deeplabv3plus": "DeepLabV3+",
    "manet": "MAnet",
    "linknet": "Linknet",
    "pspnet": "PSPNet",
    "pan": "PAN",
    "deeplabv3": "DeepLabV3",
}
BACKBONE_NAMES = {
    "resnet50": "ResNet50",
    "resnext50_32x4d": "ResNeXt50",
    "wide_resnet50_2": "WideResNet50",
    "efficientnet_b4": "EfficientNet-b4",
}
STUDY_ARCHS = ["unet", "unetplusplus", "fpn", "deeplabv3plus"]
STUDY_BACKBONES = ["resnet50", "resnext50_32x4d", "wide_resnet50_2", "efficientnet_b4"]


@dataclass(frozen=True)
class StudyRow:
    table: str  # lambda | arch_backbone
    arch: str
    backbone: str
    lam: float | None
    values: dict[str, float]  # metrics.json key -> published value


@functools.cache
def study_reference() -> tuple[StudyRow, ...]:
    """The study's λ table and all 16 architecture × backbone cells."""
    lines = [ln for ln in STUDY_FILE.read_text().splitlines() if ln and not ln.startswith("#")]
    rows = []
    for r in csv.DictReader(lines):
        values = {key: float(r[f]) for f, key in STUDY_FIELDS.items() if r.get(f)}
        lam = float(r["lambda"]) if r.get("lambda") else None
        rows.append(StudyRow(r["table"], r["arch"], r["backbone"], lam, values))
    return tuple(rows)


def _norm_arch(name: Any) -> str:
    return str(name or "").lower().replace("_", "")


def _norm_backbone(name: Any) -> str:
    return str(name or "").removeprefix("tu-")


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
    def split(self) -> str:
        """The split the run was tested on: ``test``, or ``all`` for an evaluation of every
        image of another data set (medmtl-eval split=all)."""
        return str(self.metrics.get("eval/split") or "test")

    def value(self, key: str) -> Any:
        """A metric by a column's key: ``test/<metric>`` reads the run's own test split."""
        if key.startswith("test/"):
            key = f"{self.split}/{key.removeprefix('test/')}"
        return self.metrics.get(key)

    def predictions(self) -> PerImage | None:
        """The run's per-image predictions (None if it has none: an older or failed run)."""
        if self._predictions is False:
            f = self.path / f"predictions_{self.split}.csv"
            self._predictions = read_predictions(f) if self.status == "ok" and f.exists() else None
        return self._predictions  # type: ignore[return-value]

    def setting(self, metrics_key: str, override_key: str) -> Any:
        """A setting of the run: recorded in metrics.json, else from its command line."""
        value = self.metrics.get(metrics_key)
        return value if value is not None else self.overrides.get(override_key)

    @property
    def repeat(self) -> tuple:
        """Which repeat of its cell this run is (seed, fold): runs of equal repeats are paired."""
        if "ensemble/size" in self.metrics:
            return ("ensemble", str(self.path))
        return (
            str(self.setting("seed", "seed")),
            str(self.setting("data/fold", "data.fold")),
        )

    @property
    def dataset(self) -> str | None:
        name = self.metrics.get("data/name")
        if name:
            return str(name)
        f = self.path / "config_resolved.yaml"
        if f.exists():
            try:
                return str(((yaml.safe_load(f.read_text()) or {}).get("data") or {}).get("name"))
            except yaml.YAMLError:
                return None
        return None


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


def _is_search(root: Path | None) -> bool:
    """A sweeper search (Optuna): its folder has optimization_results.yaml or says so."""
    if root is None:
        return False
    if (root / "optimization_results.yaml").exists():
        return True
    f = root / "multirun.yaml"
    return f.exists() and "optuna" in f.read_text()


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


def _is_ensemble(run: Run) -> bool:
    return "ensemble/size" in run.metrics


def build_table(runs: list[Run], root: Path | None = None) -> Table:
    """Rows from the runs' settings; ensembles (medmtl-ensemble) follow the row they average."""
    ensembles = [r for r in runs if _is_ensemble(r)]
    table = _build_rows([r for r in runs if not _is_ensemble(r)] or ensembles, root)
    if len(ensembles) == len(runs):
        return table
    for ens in ensembles:
        settings = {
            str(k): str(v) for k, v in (ens.metrics.get("ensemble/overrides") or {}).items()
        }
        values = {k: settings.get(k, "") for k in table.row_keys}
        at = next((i for i, (_, _, v) in enumerate(table.rows) if v == values), len(table.rows) - 1)
        base = table.rows[at][0] if table.rows[at][2] == values else "?"
        label = f"{base} · ensemble of {ens.metrics['ensemble/size']}"
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
    elif _is_search(root):
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


@functools.lru_cache(maxsize=512)
def _run_ci(path: Path, split: str, n_boot: int, seed: int) -> dict[str, Interval]:
    # keyed by the run folder; the file does not change while the tables are made
    p = read_predictions(path / f"predictions_{split}.csv")
    return bootstrap_ci(p, list(compute_metrics(p)), n_boot=n_boot, seed=seed)


def _cell(members: list[Run], col: Column, ci: bool = False, seed: int = 0) -> Cell:
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
        if ci and col.metric:  # metrics live in [0, 1]; a t-interval of 2 runs can overshoot
            iv = mean_ci(values)[2]
            interval = Interval(iv.value, max(0.0, iv.low), min(1.0, iv.high))
    else:
        text = f"{mean:.{d}f}"
        interval = None
        run = next(m for m in members if m.status == "ok")
        if ci and col.metric and run.predictions() is not None:
            interval = _run_ci(run.path, run.split, N_BOOT, seed).get(col.metric)
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
        cells = [_cell(members, col, ci, seed) for col in columns]
        ok = sum(m.status == "ok" for m in members)
        texts.append([label, *[c.text for c in cells], f"{ok}/{len(members)}"])
        means.append([c.mean for c in cells])
    bold = [[False] * len(header) for _ in texts]
    for j, col in enumerate(columns):
        values = [(m[j], i) for i, m in enumerate(means) if m[j] is not None]
        if len(values) > 1 and col.higher is not None:
            best = (max if col.higher else min)(v for v, _ in values)
            for v, i in values:
                if v == best:
                    bold[i][j + 1] = True
    return header, texts, bold


# -- the study as reference -----------------------------------------------------------------------
def check_reference_allowed(table: Table) -> None:
    """``--reference study`` compares with BUSI numbers: refuse runs on other data."""
    names = {r.dataset for _, members, _ in table.rows for r in members if r.status == "ok"}
    other = sorted(str(n) for n in names if n != "busi")
    if other:
        raise MedmtlError(
            f"--reference study: the study's numbers are on BUSI, but these runs are on "
            f"{', '.join(other)}; leave out --reference or run the sweep with data=busi."
        )


def study_row_for(table: Table, members: list[Run]) -> StudyRow | None:
    """The study's published row that matches a table row (by λ, or by architecture + backbone)."""
    ok = next((m for m in members if m.status == "ok"), None)
    if ok is None or "ensemble/size" in ok.metrics:  # shown once, under the row's own runs
        return None
    if table.kind == "lambda":
        if ok.metrics.get("model/task", "multitask") != "multitask":
            return None
        try:
            lam = round(float(ok.setting("loss/seg_weight", "loss.seg_weight")), 2)
        except (TypeError, ValueError):
            return None
        return next((s for s in study_reference() if s.table == "lambda" and s.lam == lam), None)
    if table.kind == "arch_backbone":
        arch = _norm_arch(ok.setting("model/arch", "model/arch"))
        backbone = _norm_backbone(ok.setting("model/encoder_study", "model/encoder"))
        return next(
            (
                s
                for s in study_reference()
                if s.table == "arch_backbone" and s.arch == arch and s.backbone == backbone
            ),
            None,
        )
    return None


def reference_rows(
    table: Table, columns: list[Column] = COLUMNS
) -> list[tuple[int, list[str], list[str]]]:
    """(row index, study row, difference row) for rows that have a published counterpart."""
    out = []
    for i, (_, members, _) in enumerate(table.rows):
        ref = study_row_for(table, members)
        if ref is None:
            continue
        study, diff = ["study (published)"], ["Δ ours − study"]
        for col in columns:
            v = ref.values.get(col.key)
            mean = _cell(members, col).mean
            study.append(f"{v:.3f}" if v is not None else "")
            diff.append(f"{mean - v:+.3f}" if (v is not None and mean is not None) else "")
        out.append((i, study + [""], diff + [""]))
    return out


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


# -- output ---------------------------------------------------------------------------------------
def _esc_tex(s: str) -> str:
    return (
        s.replace("±", r"$\pm$")
        .replace("λ", r"$\lambda$")
        .replace("Δ", r"$\Delta$")
        .replace(SIG_MARK, r"$^\dagger$")
        .replace("×", r"$\times$")
        .replace("_", r"\_")
        .replace("−", "-")
        .replace("&", r"\&")
        .replace("%", r"\%")
    )


def _md_table(header: list[str], rows: list[tuple[list[str], list[bool]]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, b in rows:
        cells = [f"**{c}**" if f else c for c, f in zip(row, b, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _tex_table(header: list[str], rows: list[tuple[list[str], list[bool]]]) -> list[str]:
    lines = [
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(_esc_tex(h) for h in header) + r" \\",
        r"\midrule",
    ]
    for row, b in rows:
        cells = [
            r"\textbf{" + _esc_tex(c) + "}" if f else _esc_tex(c)
            for c, f in zip(row, b, strict=True)
        ]
        lines.append(" & ".join(cells) + r" \\")
    return lines + [r"\bottomrule", r"\end{tabular}"]


def caption(table: Table) -> str:
    """What every run of the table shares (the sweep's fixed settings)."""
    if not table.constant:
        return ""
    return "All runs: " + ", ".join(f"{k}={v}" for k, v in sorted(table.constant.items()))


def render(
    table: Table,
    fmt: str,
    reference: bool = False,
    columns: str = "study",
    ci: bool = True,
    comparisons: list[Comparison] | None = None,
    baseline: str | None = None,
) -> str:
    """The table as ``md``, ``csv`` or ``tex``, with the column set ``columns``."""
    cols = COLUMN_SETS[columns]
    header, texts, bold = table_cells(table, cols, ci=ci)
    refs = {i: (s, d) for i, s, d in reference_rows(table, cols)} if reference else {}
    comp = {c.row: c for c in comparisons or []}
    rows: list[tuple[list[str], list[bool]]] = []
    for i, row in enumerate(texts):
        row = list(row)
        if i in comp and fmt != "csv":
            for j, col in enumerate(cols):
                d = comp[i].diffs.get(col.metric or "")
                if d is not None and d.significant:
                    row[j + 1] += f" {SIG_MARK}"
        rows.append((row, bold[i]))
        if i in refs:
            rows.append((refs[i][0], [False] * len(row)))
            rows.append((refs[i][1], [False] * len(row)))
    legend = []
    if ci:
        legend.append(
            "Cells: one run: value [95 % bootstrap CI over test images]; several seeds/folds: "
            "mean ± std [95 % t-interval of the mean over the runs, clipped to [0, 1]]."
        )
    if comparisons is not None:
        legend.append(
            f"{SIG_MARK} differs from the baseline {baseline} (paired bootstrap over the test "
            f"images, Holm-corrected p < 0.05)."
        )
    if fmt == "md":
        lines = [f"### {table.title}", ""]
        if caption(table):
            lines += [caption(table), ""]
        lines += _md_table(header, rows)
        if legend:
            lines += [""] + legend
        if comparisons is not None:
            lines += ["", f"Paired differences to {baseline}:", ""]
            lines += [f"- {s}" for s in comparison_sentences(comparisons, str(baseline), cols)]
        return "\n".join(lines) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        extra = []
        if comparisons is not None:
            for col in cols:
                if col.metric:
                    h = col.header
                    extra += [
                        f"Δ {h}",
                        f"Δ {h} low",
                        f"Δ {h} high",
                        f"p {h}",
                        f"p {h} Holm",
                        f"significant {h}",
                    ]
        w.writerow(header + extra)
        for k, (row, _) in enumerate(rows):
            out = list(row)
            src = next((i for i in comp if _row_position(i, refs) == k), None)
            if comparisons is not None:
                for col in cols:
                    if not col.metric:
                        continue
                    d = comp[src].diffs.get(col.metric) if src is not None else None
                    out += (
                        [
                            f"{d.ci.value:.6f}",
                            f"{d.ci.low:.6f}",
                            f"{d.ci.high:.6f}",
                            f"{d.p:.6f}",
                            f"{d.p_holm:.6f}",
                            str(d.significant).lower(),
                        ]
                        if d is not None
                        else [""] * 6
                    )
            w.writerow(out)
        return buf.getvalue()
    if fmt == "tex":
        lines = _tex_table(header, rows)
        if legend:
            lines += ["% " + ln for ln in legend]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown format {fmt}")


def _row_position(i: int, refs: dict) -> int:
    """Line of table row ``i`` once reference rows (two per matched row) are inserted."""
    return i + 2 * sum(1 for j in refs if j < i)


# -- the architecture × backbone grid ---------------------------------------------------------------
def grid(
    table: Table, key: str
) -> tuple[list[str], list[str], dict[tuple[str, str], tuple[str, str]]]:
    """Architectures × backbones: (rows, columns, (arch, backbone) -> (ours, study))."""
    col = next((c for c in COLUMNS if c.key == key), Column(key, key))
    cells: dict[tuple[str, str], tuple[str, str]] = {}
    archs, backbones = list(STUDY_ARCHS), list(STUDY_BACKBONES)
    for _, members, values in table.rows:
        run = next((m for m in members if m.status == "ok"), members[0])
        a = _norm_arch(run.setting("model/arch", "model/arch") or values.get("model/arch"))
        b = _norm_backbone(
            run.setting("model/encoder_study", "model/encoder") or values.get("model/encoder")
        )
        if a not in archs:
            archs.append(a)
        if b not in backbones:
            backbones.append(b)
        cells[(a, b)] = (_cell(members, col).text, "")
    for s in study_reference():
        if s.table == "arch_backbone" and key in s.values:
            ours = cells.get((s.arch, s.backbone), ("missing", ""))[0]
            cells[(s.arch, s.backbone)] = (ours, f"{s.values[key]:.3f}")
    return archs, backbones, cells


def render_grid(
    table: Table, fmt: str, keys: tuple[str, ...] = ("test/seg_dice", "test/cls_acc")
) -> str:
    """The arch × backbone table as the study prints it, ours beside the study's."""
    blocks = []
    for key in keys:
        archs, backbones, cells = grid(table, key)
        header = [f"{key.removeprefix('test/')}: ours (study)"] + [
            BACKBONE_NAMES.get(b, b) for b in backbones
        ]
        rows = []
        for a in archs:
            row = [ARCH_NAMES.get(a, a)]
            for b in backbones:
                ours, study = cells.get((a, b), ("missing", ""))
                row.append(f"{ours} ({study})" if study else ours)
            rows.append((row, [False] * len(row)))
        if fmt == "md":
            blocks.append("\n".join(_md_table(header, rows)))
        elif fmt == "tex":
            blocks.append("\n".join(_tex_table(header, rows)))
        else:
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(header)
            w.writerows(r for r, _ in rows)
            blocks.append(buf.getvalue().rstrip("\n"))
    note = "missing: no run for that cell; failed: the run failed; (study) blank: not in the study."
    if fmt == "md":
        return f"### {table.title}: the study's grid\n\n" + "\n\n".join(blocks) + f"\n\n{note}\n"
    if fmt == "tex":
        return "\n\n".join(blocks) + f"\n% {note}\n"
    return "\n\n".join(blocks) + "\n"

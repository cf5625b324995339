"""The study's published tables (package data, copied from the study) as the reference beside a
sweep's rows, and the architecture × backbone grid the study prints."""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

from medmtl.errors import MedmtlError
from medmtl.models.registry import (
    ARCHS,
    ENCODERS,
    arch_key,
    encoder_key,
    study_archs,
    study_encoders,
)
from medmtl.reporting.curated import check_curated_allowed, curated_row_for
from medmtl.reporting.runs import Run
from medmtl.reporting.tables import COLUMNS, Column, Table, pooled_cell

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
ARCH_NAMES = {a.key: a.display for a in ARCHS}  # smp name (lower case) -> the study's name
BACKBONE_NAMES = {e.key: e.display for e in ENCODERS if e.in_study}
STUDY_ARCHS = study_archs()
STUDY_BACKBONES = study_encoders()


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
    if ok is None or ok.is_ensemble or ok.is_out_of_fold:  # shown once, under the row's runs
        return None
    if table.kind == "lambda":
        if (ok.record.task or "multitask") != "multitask":
            return None
        try:
            lam = round(float(ok.setting("seg_weight")), 2)
        except (TypeError, ValueError):
            return None
        return next((s for s in study_reference() if s.table == "lambda" and s.lam == lam), None)
    if table.kind == "arch_backbone":
        arch = arch_key(ok.setting("arch"))
        backbone = encoder_key(ok.setting("encoder_study"))
        return next(
            (
                s
                for s in study_reference()
                if s.table == "arch_backbone" and s.arch == arch and s.backbone == backbone
            ),
            None,
        )
    return None


def check_reference(table: Table, reference: str) -> None:
    """Refuse a reference whose published numbers are not on the table's data and protocol."""
    if reference == "curated":
        check_curated_allowed([r for _, members, _ in table.rows for r in members])
    else:
        check_reference_allowed(table)


def reference_rows(
    table: Table, columns: list[Column] = COLUMNS, reference: str = "study"
) -> list[tuple[int, list[str], list[str]]]:
    """(row index, published row, difference row) for rows that have a published counterpart:
    the course study's (``study``) or the curated-BUSI study's Table 5 (``curated``)."""
    out = []
    for i, (_, members, _) in enumerate(table.rows):
        if reference == "curated":
            row = curated_row_for(members)
            if row is None:
                continue
            published = {k: v[0] for k, v in row.values.items()}
            texts = {k: row.text(k) for k in row.values}
            names = (f"curated study: {row.configuration} (published)", "Δ ours − published")
        else:
            ref = study_row_for(table, members)
            if ref is None:
                continue
            published = {k.removeprefix("test/"): v for k, v in ref.values.items()}
            texts = {k: f"{v:.3f}" for k, v in published.items()}
            names = ("study (published)", "Δ ours − study")
        study, diff = [names[0]], [names[1]]
        for col in columns:
            metric = col.key.removeprefix("test/")
            v = published.get(metric) if col.metric else None
            mean = pooled_cell(members, col).mean
            study.append(texts.get(metric, "") if col.metric else "")
            diff.append(f"{mean - v:+.3f}" if (v is not None and mean is not None) else "")
        out.append((i, study + [""], diff + [""]))
    return out


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
        a = arch_key(run.setting("arch") or values.get("model/arch"))
        b = encoder_key(run.setting("encoder_study") or values.get("model/encoder"))
        if a not in archs:
            archs.append(a)
        if b not in backbones:
            backbones.append(b)
        cells[(a, b)] = (pooled_cell(members, col).text, "")
    for s in study_reference():
        if s.table == "arch_backbone" and key in s.values:
            ours = cells.get((s.arch, s.backbone), ("missing", ""))[0]
            cells[(s.arch, s.backbone)] = (ours, f"{s.values[key]:.3f}")
    return archs, backbones, cells

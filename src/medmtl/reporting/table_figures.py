"""Figures beside the tables: the λ curve, the architecture × backbone heatmap, a forest plot."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from medmtl.reporting.figures import save_figure
from medmtl.reporting.study import ARCH_NAMES, BACKBONE_NAMES, grid, study_row_for
from medmtl.reporting.tables import COLUMNS, Column, Comparison, Table, pooled_cell

CURVE_KEYS = ("test/cls_acc", "test/cls_f1", "test/seg_dice", "test/seg_dice_lesion")


def _short(label: str, width: int = 48) -> str:
    """A row label without its parenthesised notes (stand-in, weights), cut to ``width``."""
    return re.sub(r" \([^)]*\)", "", label)[:width]


def _col(key: str) -> Column:
    return next(c for c in COLUMNS if c.key == key)


def lambda_curve_figure(table: Table) -> Figure | None:
    """Each main metric against λ with 95 % CI bars; the study's points overlaid."""
    points, ensembles = [], []
    for _, members, _ in table.rows:
        ok = next((m for m in members if m.status == "ok"), None)
        if ok is None:
            continue
        try:
            lam = float(ok.setting("seg_weight"))
        except (TypeError, ValueError):
            continue
        if ok.is_ensemble:
            ensembles.append((lam, ok.metrics))
        else:
            points.append((lam, members, study_row_for(table, members)))
    if not points:
        return None
    fig = Figure(figsize=(3.2 * len(CURVE_KEYS), 3.4))
    axes = fig.subplots(1, len(CURVE_KEYS))
    for ax, key in zip(axes, CURVE_KEYS, strict=True):
        col = _col(key)
        xs, ys, lo, hi, sx, sy = [], [], [], [], [], []
        for lam, members, ref in points:
            cell = pooled_cell(members, col, ci=True)
            if cell.mean is not None:
                xs.append(lam)
                ys.append(cell.mean)
                low = cell.ci.low if cell.ci and math.isfinite(cell.ci.low) else cell.mean
                high = cell.ci.high if cell.ci and math.isfinite(cell.ci.high) else cell.mean
                lo.append(cell.mean - low)
                hi.append(high - cell.mean)
            if ref is not None and key in ref.values:
                sx.append(lam)
                sy.append(ref.values[key])
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label="ours (95 % CI)")
        ens = [(lam, m[key]) for lam, m in ensembles if m.get(key) is not None]
        if ens:
            ax.plot(*zip(*ens, strict=True), "D", color="tab:green", label="ensemble of the runs")
        if sx:
            ax.plot(sx, sy, "s--", color="tab:red", label="study")
        ax.set_xlabel("λ (seg weight)")
        ax.set_title(col.header)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def heatmap_figure(table: Table, key: str = "test/seg_dice") -> Figure:
    """Architectures × backbones, ours beside the study's (blank: no run / not in the study)."""
    archs, backbones, cells = grid(table, key)

    def number(text: str) -> float:
        try:
            return float(text.split()[0]) if text else np.nan
        except ValueError:  # "missing", "failed"
            return np.nan

    data = [
        np.array([[number(cells.get((a, b), ("", ""))[w]) for b in backbones] for a in archs])
        for w in (0, 1)
    ]
    finite = np.concatenate([d[np.isfinite(d)] for d in data])
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    fig = Figure(figsize=(2.0 + 2.2 * len(backbones), 1.2 + 0.6 * len(archs)))
    axes = fig.subplots(1, 2)
    for ax, which, title in ((axes[0], 0, "ours"), (axes[1], 1, "study")):
        for i, a in enumerate(archs):
            for j, b in enumerate(backbones):
                text = cells.get((a, b), ("", ""))[which]
                label = text.split()[0] if text else "—"
                ax.text(j, i, label, ha="center", va="center", fontsize=8)
        ax.imshow(
            np.ma.masked_invalid(data[which]), cmap="viridis", vmin=vmin, vmax=vmax, alpha=0.6
        )
        names = [BACKBONE_NAMES.get(b, b) for b in backbones]
        ax.set_xticks(range(len(backbones)), names, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(archs)), [ARCH_NAMES.get(a, a) for a in archs], fontsize=8)
        ax.set_title(f"{title}: {key.removeprefix('test/')}")
    fig.tight_layout()
    return fig


def forest_figure(
    comparisons: list[Comparison], baseline: str, columns: list[Column]
) -> Figure | None:
    """Paired differences to the baseline with 95 % CIs, one panel per metric."""
    cols = [c for c in columns if c.metric and any(c.metric in x.diffs for x in comparisons)]
    if not cols:
        return None
    rows = [c for c in comparisons if c.diffs]
    ncols = min(4, len(cols))
    nrows = math.ceil(len(cols) / ncols)
    fig = Figure(figsize=(3.0 * ncols, nrows * (0.9 + 0.4 * len(rows))))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, col in zip(axes, cols, strict=False):
        for y, c in enumerate(rows):
            d = c.diffs.get(col.metric)
            if d is None:
                continue
            color = "tab:red" if d.significant else "tab:blue"
            ax.errorbar(
                d.ci.value,
                y,
                xerr=[[d.ci.value - d.ci.low], [d.ci.high - d.ci.value]],
                fmt="o",
                color=color,
                capsize=3,
            )
        ax.axvline(0, color="0.5", ls="--")
        ax.set_title(f"Δ {col.header}", fontsize=9)
        ax.tick_params(labelsize=7)
        first_column = list(axes).index(ax) % ncols == 0
        names = [_short(c.label) if first_column else "" for c in rows]
        ax.set_yticks(range(len(rows)), names, fontsize=7)
        ax.set_ylim(len(rows) - 0.5, -0.5)
    for ax in axes[len(cols) :]:
        ax.axis("off")
    fig.suptitle(
        f"difference to {_short(baseline, 60)} (95 % paired bootstrap CI; red: significant)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def write_table_figures(
    table: Table,
    out_dir: Path,
    comparisons: list[Comparison] | None,
    baseline: str | None,
    columns: list[Column],
) -> dict[str, Path]:
    """The figures that fit the table kind, written beside the tables."""
    out: dict[str, Path] = {}
    if table.kind == "lambda":
        fig = lambda_curve_figure(table)
        if fig is not None:
            out["lambda_curve"] = save_figure(fig, out_dir / "lambda_curve.png")
    if table.kind == "arch_backbone":
        out["heatmap"] = save_figure(heatmap_figure(table), out_dir / "arch_backbone_heatmap.png")
    if comparisons:
        fig = forest_figure(comparisons, str(baseline), columns)
        if fig is not None:
            out["forest"] = save_figure(fig, out_dir / f"{table.kind}_forest.png")
    return out

"""Rendering a table: Markdown, CSV or LaTeX, with the study's reference rows, the paired
comparisons' marks and the architecture × backbone grid."""

from __future__ import annotations

import csv
import io

from medmtl.reporting.study import ARCH_NAMES, BACKBONE_NAMES, grid, reference_rows
from medmtl.reporting.tables import (
    COLUMN_SETS,
    OUT_OF_FOLD,
    SIG_MARK,
    Comparison,
    Table,
    comparison_sentences,
    table_cells,
)


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
    reference: str | None = None,
    columns: str = "study",
    ci: bool = True,
    comparisons: list[Comparison] | None = None,
    baseline: str | None = None,
) -> str:
    """The table as ``md``, ``csv`` or ``tex``, with the column set ``columns`` and, with
    ``reference`` (``study`` | ``curated``), the published rows and the differences."""
    cols = COLUMN_SETS[columns]
    header, texts, bold = table_cells(table, cols, ci=ci)
    refs = {i: (s, d) for i, s, d in reference_rows(table, cols, reference)} if reference else {}
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
    if any(members[0].is_out_of_fold for _, members, _ in table.rows):
        legend.append(
            f"{OUT_OF_FOLD}: the test predictions of a row's cross-validation folds joined, every "
            "image predicted once by the fold model that did not train on it; its cells are one "
            "evaluation of all of them with a 95 % bootstrap CI over the images."
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

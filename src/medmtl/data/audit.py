"""``medmtl-data audit``: everything about a data set that can spoil training or evaluation."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medmtl.data.cache import MaskSizeError, read_case
from medmtl.data.duplicates import DuplicateGroups, find_groups, thumbnail
from medmtl.data.index import Case, DatasetIndex
from medmtl.data.splits import SplitSettings, read_split_file
from medmtl.errors import DataError


@dataclass(frozen=True)
class ListRelation:
    """How an image list (``data.image_list``) relates to medmtl's near-duplicate groups, found
    on the whole data set the list was made from."""

    list_name: str
    total: int  # images of the whole data set
    groups: int  # its near-duplicate groups (two or more images)
    kept_several: int  # groups the list keeps two or more images of
    kept_one: int  # groups it keeps exactly one image of
    kept_grouped: int  # images it keeps that share a group with another image it keeps


@dataclass
class AuditReport:
    index: DatasetIndex
    unreadable: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    multi_mask: list[Case] = field(default_factory=list)
    empty_masks: Counter = field(default_factory=Counter)
    lesion_class_empty: list[Case] = field(default_factory=list)
    groups: DuplicateGroups | None = None
    group_cases: list[Case] = field(default_factory=list)
    split_counts: dict[str, Counter] | None = None
    split_problem: str | None = None
    listed: ListRelation | None = None

    @property
    def fatal(self) -> list[str]:
        """Reasons the data set cannot be trained on as it is."""
        reasons = list(self.index.problems)
        reasons += self.unreadable + self.size_mismatch
        if self.split_problem:
            reasons.append(self.split_problem)
        return reasons


def _inspect(
    case: Case, thumb_size: int
) -> tuple[np.ndarray | None, bool | None, str | None, str | None]:
    """Thumbnail, mask emptiness, read problem, size problem of one case."""
    try:
        image, mask, _ = read_case(case)
    except MaskSizeError as exc:
        return None, None, None, str(exc)
    except DataError as exc:
        return None, None, str(exc), None
    return thumbnail(image, thumb_size), not mask.any(), None, None


def audit(
    index: DatasetIndex,
    split_file: Path | None,
    dedup: SplitSettings | None = None,
    normal_classes: tuple[str, ...] = ("normal",),
    workers: int = 2,
    whole: DatasetIndex | None = None,
    list_name: str = "",
) -> AuditReport:
    """Decode every file and collect the report (nothing is raised for a bad file).

    Near duplicates are found with the split's own settings (``dedup``: threshold and thumbnail
    size), so the audit's groups are the ones a new split would keep together. ``whole``: the
    data set ``index`` is an image list of (``list_name``); its groups are then found on the
    whole data set, and the report says how the list relates to them (:class:`ListRelation`).
    """
    dedup = dedup or SplitSettings()
    report = AuditReport(index=index)
    cases = index.cases
    kept = {c.case_id for c in cases}
    others = [c for c in (whole.cases if whole else []) if c.case_id not in kept]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda c: _inspect(c, dedup.thumb_size), cases))
        left_thumbs = [t for t, *_ in pool.map(lambda c: _inspect(c, dedup.thumb_size), others)]
    thumbs, thumb_cases = [], []
    for case, (thumb, empty, read_err, size_err) in zip(cases, results, strict=True):
        if len(case.masks) > 1:
            report.multi_mask.append(case)
        if read_err:
            report.unreadable.append(read_err)
            continue
        if size_err:
            report.size_mismatch.append(size_err)
            continue
        thumbs.append(thumb)
        thumb_cases.append(case)
        if empty:
            report.empty_masks[case.class_name] += 1
            if case.class_name not in normal_classes:
                report.lesion_class_empty.append(case)
    report.group_cases = thumb_cases
    # with a list: the kept images' groups as the whole data set forms them (linked through
    # images the list left out, too)
    left = [t for t in left_thumbs if t is not None]
    found = find_groups(thumbs + left, dedup.dedup_threshold)
    n = len(thumbs)
    report.groups = DuplicateGroups(
        found.group_of[:n], [p for p in found.pairs if p[0] < n and p[1] < n]
    )
    if whole is not None:
        sizes = Counter(found.group_of)
        kept_in = Counter(found.group_of[:n])
        report.listed = ListRelation(
            list_name=list_name,
            total=len(found.group_of),
            groups=sum(size > 1 for size in sizes.values()),
            kept_several=sum(sizes[g] > 1 and k > 1 for g, k in kept_in.items()),
            kept_one=sum(sizes[g] > 1 and k == 1 for g, k in kept_in.items()),
            kept_grouped=sum(k for k in kept_in.values() if k > 1),
        )
    if split_file is not None and split_file.exists():
        try:
            split, _, _ = read_split_file(split_file, [c.case_id for c in cases], dedup.folds)
            report.split_counts = {
                s: Counter(c.class_name for c, sp in zip(cases, split, strict=True) if sp == s)
                for s in dedup.parts()
            }
        except DataError as exc:
            report.split_problem = str(exc)
    return report


def format_report(report: AuditReport, max_groups: int = 15) -> str:
    """Plain-text report, most important findings first."""
    idx = report.index
    lines = [f"Data set: {idx.root}", ""]
    lines.append(
        "Images per class: "
        + ", ".join(f"{c} {n}" for c, n in idx.counts().items())
        + f" (total {len(idx.cases)})"
    )
    if report.split_counts:
        lines.append("Images per split and class:")
        for s, cnt in report.split_counts.items():
            lines.append(
                f"  {s:5s}: "
                + ", ".join(f"{c} {cnt.get(c, 0)}" for c in idx.classes)
                + f" (total {sum(cnt.values())})"
            )
    elif report.split_problem:
        lines.append(f"Split file: PROBLEM: {report.split_problem}")
    else:
        lines.append("Split file: none yet (the first training run writes it)")
    lines.append(f"Images with several masks (merged with OR): {len(report.multi_mask)}")
    for case in report.multi_mask:
        lines.append(f"  {case.case_id}: {len(case.masks)} mask files")
    lines.append(
        "Empty masks: " + (", ".join(f"{c} {n}" for c, n in report.empty_masks.items()) or "none")
    )
    for case in report.lesion_class_empty:
        lines.append(f"  WARNING {case.case_id}: class {case.class_name} but the mask is empty")
    lines.append(f"Image/mask size mismatches: {len(report.size_mismatch)}")
    lines += [f"  {p}" for p in report.size_mismatch]
    lines.append(f"Unreadable files: {len(report.unreadable)}")
    lines += [f"  {p}" for p in report.unreadable]
    lines.append(f"Layout problems: {len(idx.problems)}")
    lines += [f"  {p}" for p in idx.problems]
    if idx.ignored_files:
        lines.append(f"Ignored (not used for training): {len(idx.ignored_files)}")
        lines += [f"  {p}: {why}" for p, why in idx.ignored_files]
    groups = report.groups.members() if report.groups else {}
    cases = report.group_cases
    mixed = [m for m in groups.values() if len({cases[i].class_name for i in m}) > 1]
    same = [m for m in groups.values() if len({cases[i].class_name for i in m}) == 1]
    covered = sum(len(m) for m in groups.values())
    rel = report.listed
    if rel is not None:
        lines.append(
            f"Image list {rel.list_name}: {len(idx.cases)} of the data set's {rel.total} images. "
            f"Of medmtl's {rel.groups} near-duplicate groups in all {rel.total}, the list keeps "
            f"two or more images of {rel.kept_several} ({rel.kept_grouped} kept images that "
            f"medmtl would have grouped) and one image of {rel.kept_one}."
        )
    lines.append(
        f"Near-duplicate groups{' among the kept images' if rel else ''}: {len(groups)} "
        f"covering {covered} images; {len(mixed)} mix classes"
    )
    for m in mixed:
        lines.append("  MIXED: " + ", ".join(cases[i].case_id for i in m))
    for m in sorted(same, key=len, reverse=True)[:max_groups]:
        lines.append("  " + ", ".join(cases[i].case_id for i in m))
    if len(same) > max_groups:
        lines.append(f"  ... and {len(same) - max_groups} more single-class groups")
    fatal = report.fatal
    lines.append("")
    lines.append(
        f"RESULT: NOT trainable ({len(fatal)} problem(s)); fix the files listed above:\n"
        + "\n".join(f"  {r}" for r in fatal)
        if fatal
        else "RESULT: OK, trainable."
    )
    return "\n".join(lines)

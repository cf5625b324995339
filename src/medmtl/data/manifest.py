"""Data sets listed in a CSV file (``data=manifest``), and the row reader other layouts share.

One row per image: the image path, its mask path(s) (several separated by ``;``, merged with
OR), the label, and optionally a group (patient or case id), a data set name, a split
(train | val | test; empty: medmtl decides) and any metadata columns (device, side, ...). Relative paths resolve
against the CSV's folder. Every problem of the file is collected and reported together.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from medmtl.data.index import Case, DatasetIndex
from medmtl.data.splits import SPLITS
from medmtl.errors import DataError, summarize
from medmtl.metrics import LESION_COLUMNS

# per-image uncertainty: the network's outputs of these names (MultiTaskNet, EnsembleNet) are
# the predictions files' columns of the same names
UNCERTAINTY_COLUMNS = ("unlike_score", "class_disagreement", "mask_agreement")

# names medmtl writes into predictions_<split>.csv itself: a metadata column may not take them
RESERVED = {
    "id",
    "dataset",
    "split",
    "true_class",
    "pred_class",
    "dice",
    "iou",
    "gt_pixels",
    "pred_pixels",
    "tp_pixels",
    "entropy",
    "answer_set",
    "refer",
    "refer_min_mask_agreement",
    "unlike_training",
    *UNCERTAINTY_COLUMNS,
    *LESION_COLUMNS,
}


@dataclass(frozen=True)
class Columns:
    """Which CSV column holds what (``data.columns``); optional ones may be missing."""

    image: str = "image"
    label: str = "label"
    mask: str = "mask"
    group: str = "group"
    dataset: str = "dataset"
    split: str = "split"

    @classmethod
    def from_dict(cls, d: Mapping[str, str] | None) -> Columns:
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise DataError(
                f"data.columns: unknown key(s) {', '.join(sorted(unknown))}; known: "
                f"{', '.join(cls.__dataclass_fields__)}."
            )
        return cls(**{k: str(v) for k, v in d.items()})


def read_csv_rows(path: Path, required: Sequence[str], what: str) -> tuple[list[str], list[dict]]:
    """The header and rows of a comma-separated file; a missing file, a file that is not
    comma-separated and a missing required column are each one clear error."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: {what} not found.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the {what} ({exc}).") from exc
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise DataError(f"{path}: the {what} is empty; its first line must name the columns.")
    try:
        reader = csv.DictReader(lines)
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc}).") from exc
    missing = [c for c in required if c not in header]
    if missing:
        if len(header) == 1 and any(sep in header[0] for sep in (";", "\t", "|")):
            sep = next(s for s in (";", "\t", "|") if s in header[0])
            raise DataError(
                f"{path}: the {what} is separated by {sep!r}, not by commas; save it as a "
                "comma-separated CSV file."
            )
        raise DataError(
            f"{path}: the {what} has no column {', '.join(repr(m) for m in missing)} (it has "
            f"{', '.join(repr(h) for h in header)}); rename the column or set data.columns."
        )
    if not rows:
        raise DataError(f"{path}: the {what} lists no images.")
    return header, rows


def cases_from_rows(
    rows: Sequence[Mapping[str, str]],
    base: Path,
    classes: Sequence[str],
    columns: Columns,
    header: Sequence[str],
    source: str,
    class_map: Mapping[str, str] | None = None,
    mask_optional_classes: Sequence[str] = (),
    metadata: Sequence[str] | None = None,
    dataset: str = "",
    first_line: int = 2,
) -> tuple[list[Case], list[str]]:
    """Cases from manifest-like rows, and every problem found (``<source> line N: ...``).

    ``class_map`` maps the file's labels to ``classes`` (without it a label must be one of
    them). ``metadata``: the columns kept with each case (None: every column not used for
    something else). Images and masks must exist; reading them is the cache's job.
    """
    used = {columns.image, columns.label, columns.mask, columns.group, columns.dataset}
    used.add(columns.split)
    meta_cols = [h for h in header if h not in used] if metadata is None else list(metadata)
    clash = sorted(set(meta_cols) & RESERVED)
    problems: list[str] = []
    if clash:
        problems.append(
            f"{source}: metadata column(s) {', '.join(clash)} have names medmtl writes itself; "
            "rename them"
        )
    has = {c: c in header for c in (columns.mask, columns.group, columns.dataset, columns.split)}
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for n, row in enumerate(rows, start=first_line):
        where = f"{source} line {n}"
        found = _row_problems(row, n, where, base, columns, has)
        image_text = row.get(columns.image, "")
        label_text = row.get(columns.label, "")
        if class_map is not None:
            if label_text not in class_map:
                found.append(
                    f"{where}: label {label_text!r} is not in data.class_map "
                    f"({', '.join(sorted(class_map))}); add it to the map"
                )
                name = None
            else:
                name = class_map[label_text]
        else:
            name = label_text
        if name is not None and name not in classes:
            found.append(
                f"{where}: label {label_text!r} is not one of the classes {', '.join(classes)}; "
                "fix the label, or set data.classes or data.class_map"
            )
        masks = _paths(row.get(columns.mask, ""), base) if has[columns.mask] else ()
        if not masks and name in classes and name not in mask_optional_classes:
            found.append(
                f"{where}: no mask for {image_text!r} (class {name}); give its mask, or list "
                "classes without lesions in data.mask_optional_classes"
            )
        case_id = _relative(base / image_text, base) if image_text else ""
        if case_id in seen:
            found.append(f"{where}: image {image_text!r} is listed again (line {seen[case_id]})")
        seen.setdefault(case_id, n)
        if found:
            problems += found
            continue
        cases.append(
            Case(
                case_id=case_id,
                image=base / image_text,
                masks=masks,
                label=list(classes).index(name),
                class_name=name,
                group=row.get(columns.group) or None if has[columns.group] else None,
                dataset=row.get(columns.dataset, "") if has[columns.dataset] else dataset,
                meta={c: row.get(c, "") for c in meta_cols},
                split=(row.get(columns.split) or None) if has[columns.split] else None,
            )
        )
    if rows and has[columns.mask] is False and not set(classes) <= set(mask_optional_classes):
        problems = [p for p in problems if ": no mask for " not in p]
        problems.append(
            f"{source}: no masks at all (no column {columns.mask!r}); medmtl segments the lesion "
            "and needs its mask: add the column (several masks separated by ';'), set "
            "data.columns.mask, or list classes without lesions in data.mask_optional_classes"
        )
    return cases, problems


def _paths(text: str, base: Path) -> tuple[Path, ...]:
    return tuple(base / p.strip() for p in text.split(";") if p.strip())


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _row_problems(
    row: Mapping[str, str], n: int, where: str, base: Path, columns: Columns, has: dict
) -> list[str]:
    out = []
    image = row.get(columns.image, "")
    if not image:
        out.append(f"{where}: the {columns.image!r} column is empty")
    elif not (base / image).is_file():
        out.append(f"{where}: image {image!r} not found (looked for {base / image})")
    for mask in _paths(row.get(columns.mask, ""), base) if has[columns.mask] else ():
        if not mask.is_file():
            out.append(f"{where}: mask {_relative(mask, base)!r} not found (looked for {mask})")
    if has[columns.group] and not row.get(columns.group):
        out.append(
            f"{where}: the {columns.group!r} column is empty; give every row its patient or "
            "case id, or leave the column out"
        )
    given = row.get(columns.split) if has[columns.split] else ""
    if given and given not in SPLITS:
        out.append(
            f"{where}: split {given!r} is not one of {', '.join(SPLITS)} (or empty: medmtl decides)"
        )
    return out


def index_manifest(
    path: str | Path,
    classes: Sequence[str],
    columns: Columns | None = None,
    class_map: Mapping[str, str] | None = None,
    mask_optional_classes: Sequence[str] = (),
    strict: bool = True,
    dataset: str = "",
) -> DatasetIndex:
    """Index the data set a manifest CSV lists (``data=manifest``).

    With ``strict`` every problem is raised at once as one :class:`DataError`; otherwise they
    are kept in ``problems`` (the audit).
    """
    path = Path(path).expanduser()
    columns = columns or Columns()
    header, rows = read_csv_rows(path, (columns.image, columns.label), "manifest")
    cases, problems = cases_from_rows(
        rows,
        path.parent.resolve(),
        classes,
        columns,
        header,
        str(path),
        class_map,
        mask_optional_classes,
        dataset=dataset,
    )
    return finish_index(path.parent.resolve(), classes, cases, problems, strict, str(path))


def finish_index(
    root: Path,
    classes: Sequence[str],
    cases: list[Case],
    problems: list[str],
    strict: bool,
    source: str,
) -> DatasetIndex:
    """The index of a listed data set; a class without images is a problem like any other."""
    empty = [c for c in classes if not any(case.class_name == c for case in cases)]
    if cases:
        problems = problems + [
            f"{source}: no images of class {c}; fix data.classes or the labels" for c in empty
        ]
    if problems and strict:
        raise DataError(
            f"{len(problems)} problem(s) in {source}: {summarize(problems, 5)}. Fix these; "
            "`medmtl-data audit` lists every problem of the data set."
        )
    if not cases and strict:
        raise DataError(f"{source}: no usable images.")
    return DatasetIndex(root=root, classes=tuple(classes), cases=cases, problems=problems)

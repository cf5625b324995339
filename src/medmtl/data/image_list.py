"""A published image list (``data.image_list``): a data set of class folders restricted to the
images a study kept, e.g. the 450 images of curated BUSI (``lists/curated_busi.csv``).

The list is a CSV of ``class;id`` rows (``;`` or ``,``), where ``id`` is the number in the
image's file name: ``benign;20`` is ``benign/benign (20).png``. Every listed image must be
there (a missing one is one line naming the list and the image: nothing is dropped silently);
the images the list leaves out are reported in the index's ``ignored_files``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path

from medmtl.data.index import DatasetIndex
from medmtl.errors import DataError

# BUSI's file names: "<class> (<number>).png"
_NUMBER = re.compile(r"\((\d+)\)\s*$")


def read_image_list(path: str | Path) -> list[tuple[str, int]]:
    """The ``(class, id)`` rows of an image list, in file order, or one line naming the file
    and its first bad row."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(
            f"{path}: image list not readable ({exc.strerror or exc}); set data.image_list to a "
            "class;id CSV (e.g. lists/curated_busi.csv) or null."
        ) from exc
    lines = text.splitlines()
    delimiter = ";" if lines and ";" in lines[0] else ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    if not rows or [c.strip().lower() for c in rows[0]] != ["class", "id"]:
        raise DataError(
            f"{path}: not an image list; its first line must be the header class;id "
            "(then one class;number row per image)."
        )
    out: list[tuple[str, int]] = []
    seen: set[tuple[str, int]] = set()
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            cls, number = row[0].strip(), int(row[1])
        except (IndexError, ValueError):
            raise DataError(
                f"{path}:{line}: {';'.join(row)!r} is not a class;number row, e.g. benign;20."
            ) from None
        if (cls, number) in seen:
            raise DataError(f"{path}: {cls};{number} is listed more than once.")
        seen.add((cls, number))
        out.append((cls, number))
    if not out:
        raise DataError(f"{path}: the image list names no image.")
    return out


def restrict(index: DatasetIndex, list_path: str | Path) -> DatasetIndex:
    """``index`` with only the images the list names, in the index's order; the others are
    reported in ``ignored_files``. A listed image that is not in ``index`` (or a listed class
    that is not one of its classes) is one line naming the list."""
    listed = read_image_list(list_path)
    unknown = sorted({c for c, _ in listed} - set(index.classes))
    if unknown:
        raise DataError(
            f"{list_path}: class {unknown[0]!r} is not one of the data set's classes "
            f"({', '.join(index.classes)})."
        )
    by_key = {}
    for case in index.cases:
        number = _NUMBER.search(case.image.stem)
        if number is not None:
            by_key[(case.class_name, int(number.group(1)))] = case
    missing = [f"{c};{n}" for c, n in listed if (c, n) not in by_key]
    if missing:
        raise DataError(
            f"{list_path}: {len(missing)} listed image(s) not in {index.root} (first: "
            f"{missing[0]}); point data.root at the data set the list was made from."
        )
    keep = {by_key[key].case_id for key in listed}
    left_out = [
        (case.image, f"not in the image list {Path(list_path).name}")
        for case in index.cases
        if case.case_id not in keep
    ]
    return replace(
        index,
        cases=[c for c in index.cases if c.case_id in keep],
        ignored_files=[*index.ignored_files, *left_out],
    )

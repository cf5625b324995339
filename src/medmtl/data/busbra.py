"""BUS-BRA (Gómez-Flores et al., Medical Physics 2024) in its distributed layout (``data=busbra``).

```
<root>/bus_data.csv      ID,Case,Histology,Pathology,BIRADS,Device,Width,Height,Side,BBOX
<root>/Images/<ID>.png   8-bit grey, e.g. Images/bus_0001-l.png
<root>/Masks/mask_<ID without "bus_">.png            e.g. Masks/mask_0001-l.png
<root>/5-fold-cv.csv     ID, kFold (1..5) [, valid_<k>: 1 train, 0 validation in round k]
<root>/10-fold-cv.csv    the same with 10 folds
```

``Pathology`` (benign | malignant) is the label and ``Case`` the patient: all images of one
patient stay on one side of every split and fold. The published folds are patient-level; the
test split is one of them (``data.busbra.test_fold``). Where the fold file marks validation
images (``valid_<k>``) they are used, otherwise medmtl draws the validation images from the
other folds, patients kept together. ``data.busbra.folds=null`` ignores the published folds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from medmtl.data.index import DatasetIndex
from medmtl.data.manifest import Columns, cases_from_rows, finish_index, read_csv_rows
from medmtl.errors import ConfigError, DataError

DATA_FILE = "bus_data.csv"
REQUIRED = ("ID", "Case", "Pathology")
# bus_data.csv columns kept with each image (predictions_<split>.csv, evaluation by=<column>)
METADATA = ("ID", "Histology", "BIRADS", "Device", "Side")
FOLD_FILES = {5: "5-fold-cv.csv", 10: "10-fold-cv.csv"}
_COLUMNS = Columns(image="image", label="Pathology", mask="mask", group="Case", split="split")


@dataclass(frozen=True)
class BusbraSplit:
    """Which published partition to use (``data.busbra``)."""

    folds: int | None = 5  # 5 | 10: the published k-fold file; None: medmtl's own split
    test_fold: int = 1  # the published fold that is the test split (1..folds)

    @classmethod
    def from_dict(cls, d: Mapping | None) -> BusbraSplit:
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                f"data.busbra: unknown key(s) {', '.join(sorted(unknown))}; known: folds, "
                "test_fold."
            )
        folds = d.get("folds", 5)
        out = cls(folds=None if folds is None else int(folds), test_fold=int(d.get("test_fold", 1)))
        if out.folds is not None and out.folds not in FOLD_FILES:
            raise ConfigError(
                f"data.busbra.folds={out.folds}: BUS-BRA publishes 5 and 10 folds; use 5, 10 "
                "or null (medmtl's own patient-aware split)."
            )
        if out.folds is not None and not 1 <= out.test_fold <= out.folds:
            raise ConfigError(f"data.busbra.test_fold={out.test_fold}: must be in 1..{out.folds}.")
        return out


def mask_name(image_id: str) -> str:
    """``bus_0001-l`` -> ``mask_0001-l.png`` (the distributed naming)."""
    return f"mask_{image_id.removeprefix('bus_')}.png"


def _fold_of(root: Path, split: BusbraSplit, ids: Sequence[str]) -> tuple[dict, list[str]]:
    """Each image's split from the published fold file, and the file's problems."""
    path = root / FOLD_FILES[int(split.folds)]
    header, rows = read_csv_rows(path, ("ID", "kFold"), "fold file")
    valid = f"valid_{split.test_fold}"
    out: dict[str, str | None] = {}
    problems = []
    for n, row in enumerate(rows, start=2):
        try:
            fold = int(float(row["kFold"]))
        except ValueError:
            problems.append(f"{path} line {n}: kFold {row['kFold']!r} is not a fold number")
            continue
        if not 1 <= fold <= int(split.folds):
            problems.append(f"{path} line {n}: kFold {fold} is not in 1..{split.folds}")
            continue
        if fold == split.test_fold:
            out[row["ID"]] = "test"
        elif valid in header and row.get(valid, "") != "":
            out[row["ID"]] = "val" if float(row[valid]) == 0 else "train"
        else:
            out[row["ID"]] = None  # medmtl chooses the validation images
    missing = [i for i in ids if i not in out]
    if missing:
        problems.append(
            f"{path}: {len(missing)} image(s) of {DATA_FILE} have no fold (e.g. {missing[0]}); "
            "use the fold file that came with the data set"
        )
    return out, problems


def index_busbra(
    root: str | Path,
    classes: Sequence[str] = ("benign", "malignant"),
    split: BusbraSplit | None = None,
    class_map: Mapping[str, str] | None = None,
    strict: bool = True,
    dataset: str = "busbra",
) -> DatasetIndex:
    """Index BUS-BRA: labels from ``Pathology``, patients from ``Case``, the published folds."""
    root = Path(root).expanduser()
    split = split or BusbraSplit()
    if not root.is_dir():
        raise DataError(
            f"{root}: BUS-BRA folder not found. Set data.root (or BUSBRA_ROOT) to the folder that "
            f"holds {DATA_FILE}, Images/ and Masks/."
        )
    header, rows = read_csv_rows(root / DATA_FILE, REQUIRED, "BUS-BRA table")
    folds, problems = _fold_of(root, split, [r["ID"] for r in rows]) if split.folds else ({}, [])
    listed = [
        {
            **r,
            "image": f"Images/{r['ID']}.png",
            "mask": f"Masks/{mask_name(r['ID'])}",
            "split": folds.get(r["ID"]) or "",
        }
        for r in rows
    ]
    cases, found = cases_from_rows(
        listed,
        root.resolve(),
        classes,
        _COLUMNS,
        [*header, "image", "mask", "split"],
        str(root / DATA_FILE),
        class_map,
        metadata=[m for m in METADATA if m in header],
        dataset=dataset,
    )
    return finish_index(
        root.resolve(), classes, cases, problems + found, strict, str(root / DATA_FILE)
    )

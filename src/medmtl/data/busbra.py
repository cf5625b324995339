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
test split is one or several of them (``data.busbra.test_fold``: 2 or [2, 3, 4, 5]), the
validation split another (``data.busbra.val_fold``) or, by default, the images the fold file
marks (``valid_<k>``). Those marks are image-level: they put some patients on both the
training and the validation side, and the data module then draws the validation images
itself, patients kept together (:func:`medmtl.data.splits.repair_given_split`). Without
``valid_<k>`` medmtl draws them too. ``data.busbra.folds=null`` ignores the published folds.
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
FOLD_COLUMN = "kFold"  # the published fold, kept with each image's metadata
_COLUMNS = Columns(image="image", label="Pathology", mask="mask", group="Case", split="split")


@dataclass(frozen=True)
class BusbraSplit:
    """Which published partition to use (``data.busbra``)."""

    folds: int | None = 5  # 5 | 10: the published k-fold file; None: medmtl's own split
    test_fold: tuple[int, ...] = (1,)  # the published fold(s) that are the test split
    val_fold: int | None = None  # the published fold that is the validation split; None:
    # the fold file's valid_<k> marks of the (first) test fold, else medmtl's choice

    @property
    def valid_column(self) -> str:
        """The fold file's column that marks validation images for this test fold."""
        return f"valid_{self.test_fold[0]}"

    @classmethod
    def from_dict(cls, d: Mapping | None) -> BusbraSplit:
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                f"data.busbra: unknown key(s) {', '.join(sorted(unknown))}; known: "
                f"{', '.join(cls.__dataclass_fields__)}."
            )
        folds = d.get("folds", cls.folds)
        test = d.get("test_fold", cls.test_fold)
        test = list(test) if isinstance(test, (list, tuple)) else [test]
        val = d.get("val_fold")
        try:
            out = cls(
                folds=None if folds is None else int(folds),
                test_fold=tuple(int(t) for t in test),
                val_fold=None if val is None else int(val),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"data.busbra: folds, test_fold and val_fold are fold numbers ({exc})."
            ) from exc
        if out.folds is not None and out.folds not in FOLD_FILES:
            raise ConfigError(
                f"data.busbra.folds={out.folds}: BUS-BRA publishes 5 and 10 folds; use 5, 10 "
                "or null (medmtl's own patient-aware split)."
            )
        if out.folds is None:
            return out
        for t in out.test_fold:
            if not 1 <= t <= out.folds:
                raise ConfigError(f"data.busbra.test_fold={t}: must be in 1..{out.folds}.")
        if not out.test_fold or len(set(out.test_fold)) != len(out.test_fold):
            raise ConfigError(
                f"data.busbra.test_fold={list(out.test_fold)}: give one fold or distinct folds."
            )
        if out.val_fold is not None:
            if not 1 <= out.val_fold <= out.folds:
                raise ConfigError(
                    f"data.busbra.val_fold={out.val_fold}: must be in 1..{out.folds}."
                )
            if out.val_fold in out.test_fold:
                raise ConfigError(
                    f"data.busbra.val_fold={out.val_fold} is also a test fold; choose another."
                )
        return out


def mask_name(image_id: str) -> str:
    """``bus_0001-l`` -> ``mask_0001-l.png`` (the distributed naming)."""
    return f"mask_{image_id.removeprefix('bus_')}.png"


def _mark(value: str | None) -> float | None:
    """A ``valid_<k>`` cell: 0 (validation), 1 (training), or None (empty / NaN)."""
    try:
        v = float(value or "nan")
    except ValueError:
        return None
    return None if v != v else v


def _fold_of(root: Path, split: BusbraSplit, ids: Sequence[str]) -> tuple[dict, dict, list[str]]:
    """Each image's split and published fold from the fold file, and the file's problems."""
    path = root / FOLD_FILES[int(split.folds)]
    header, rows = read_csv_rows(path, ("ID", "kFold"), "fold file")
    valid = split.valid_column
    out: dict[str, str | None] = {}
    number: dict[str, str] = {}
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
        number[row["ID"]] = str(fold)
        if fold in split.test_fold:
            out[row["ID"]] = "test"
        elif split.val_fold is not None:
            out[row["ID"]] = "val" if fold == split.val_fold else "train"
        elif valid in header and _mark(row.get(valid)) is not None:
            out[row["ID"]] = "val" if _mark(row[valid]) == 0 else "train"
        else:
            out[row["ID"]] = None  # medmtl chooses the validation images
    missing = [i for i in ids if i not in out]
    if missing:
        problems.append(
            f"{path}: {len(missing)} image(s) of {DATA_FILE} have no fold (e.g. {missing[0]}); "
            "use the fold file that came with the data set"
        )
    return out, number, problems


def busbra_not_found(root: Path) -> DataError:
    """The one line for a BUS-BRA folder that is not there."""
    return DataError(
        f"{root}: BUS-BRA folder not found. Set data.root (or BUSBRA_ROOT) to the folder that "
        f"holds {DATA_FILE}, Images/ and Masks/."
    )


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
        raise busbra_not_found(root)
    header, rows = read_csv_rows(root / DATA_FILE, REQUIRED, "BUS-BRA table")
    ids = [r["ID"] for r in rows]
    folds, number, problems = _fold_of(root, split, ids) if split.folds else ({}, {}, [])
    listed = [
        {
            **r,
            "image": f"Images/{r['ID']}.png",
            "mask": f"Masks/{mask_name(r['ID'])}",
            "split": folds.get(r["ID"]) or "",
            FOLD_COLUMN: number.get(r["ID"], ""),
        }
        for r in rows
    ]
    # the published fold of each image is kept too (evaluation by=kFold: one row per fold)
    metadata = [m for m in METADATA if m in header] + ([FOLD_COLUMN] if split.folds else [])
    cases, found = cases_from_rows(
        listed,
        root.resolve(),
        classes,
        _COLUMNS,
        [*header, "image", "mask", "split", FOLD_COLUMN],
        str(root / DATA_FILE),
        class_map,
        metadata=metadata,
        dataset=dataset,
    )
    return finish_index(
        root.resolve(), classes, cases, problems + found, strict, str(root / DATA_FILE)
    )

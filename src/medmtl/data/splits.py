"""Group-aware, class-stratified splits written once to a JSON file and reused by every run.

The file lists every case with its split and near-duplicate group. A data set that no longer
matches its split file (files added or removed) is an error, never a silent re-split.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from medmtl.errors import DataError, summarize
from medmtl.io.files import atomic_write_text
from medmtl.settings.data import DATA

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
SPLIT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class SplitSettings:
    """The fixed, group-aware split (written once to ``file``) and the fold used of it."""

    file: str | None = None  # None: split.json beside the data
    # the defaults are the data schema's (data.split.*, data.dedup.*, data.num_folds, data.fold)
    seed: int = DATA.split.seed
    val_fraction: float = DATA.split.val_fraction
    test_fraction: float = DATA.split.test_fraction
    dedup_threshold: float = DATA.dedup.threshold  # near duplicates: thumbnail correlation ≥ this
    thumb_size: int = DATA.dedup.thumb_size  # side of the thumbnails compared
    num_folds: int | None = DATA.num_folds  # k-fold over train+val; the test split is untouched
    fold: int = DATA.fold
    folds: int | None = DATA.split.folds  # cross-validation: the test side is fold ``fold``
    by: str = DATA.split.by  # what stays on one side: near-duplicate group, or image

    def document(self, dataset: str) -> dict[str, Any]:
        """The settings written into the split file."""
        doc = {
            "dataset": dataset,
            "dedup_threshold": self.dedup_threshold,
            "thumb_size": self.thumb_size,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
        }
        if self.folds:
            doc.update(folds=int(self.folds), by=self.by)
        else:
            doc["test_fraction"] = self.test_fraction
        return doc

    def parts(self) -> tuple[str, ...]:
        """What a case of the split file can be in: a split, or (cross-validation) a fold."""
        return split_parts(self.folds)

    def units(self, groups: Sequence[int]) -> list[int]:
        """What the folds keep together: the given groups, or (``by=image``) each image."""
        return list(groups) if self.by == "group" else list(range(len(groups)))


def fold_name(fold: int) -> str:
    """The name of cross-validation fold ``fold`` in a split file: ``fold0``, ``fold1``..."""
    return f"fold{int(fold)}"


def fold_names(folds: int) -> tuple[str, ...]:
    """The names of ``folds`` cross-validation folds."""
    return tuple(fold_name(k) for k in range(int(folds)))


def split_parts(folds: int | None) -> tuple[str, ...]:
    """The parts of a split file: the splits, or the names of ``folds`` cross-validation folds."""
    return fold_names(folds) if folds else SPLITS


def cv_folds_of(data: Mapping[str, Any]) -> int | None:
    """The cross-validation folds a run's data settings draw (``data.split.folds``), or None."""
    return (data.get("split") or {}).get("folds")


def make_cv_folds(
    labels: Sequence[int], groups: Sequence[int], folds: int, seed: int = 42
) -> list[str]:
    """Every case in one of ``folds`` class-stratified folds (``fold0``...), each group in one
    fold: a cross-validation protocol's folds (pass one group per image to split by image)."""
    labels_a, groups_a = np.asarray(labels), np.asarray(groups)
    n_groups = len(np.unique(groups_a))
    smallest = min(Counter(labels_a.tolist()).values()) if len(labels_a) else 0
    if n_groups < folds or smallest < folds:
        raise DataError(
            f"{len(labels_a)} images in {n_groups} group(s), the smallest class with {smallest}: "
            f"too few for {folds} stratified folds. Use more data or fewer data.split.folds."
        )
    sgkf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    out = np.empty(len(labels_a), dtype=object)
    for name, (_, idx) in zip(
        fold_names(folds), sgkf.split(labels_a, labels_a, groups_a), strict=True
    ):
        out[idx] = name
    return out.tolist()


def cv_split(
    parts: Sequence[str],
    labels: Sequence[int],
    groups: Sequence[int],
    fold: int,
    val_fraction: float,
    seed: int = 42,
) -> list[str]:
    """The train/val/test split of cross-validation fold ``fold``: its fold is the test side;
    ``val_fraction`` of the other folds (stratified, groups kept together, drawn with a seed
    of its own per fold) is the validation side, the rest trains."""
    names = sorted(set(parts))
    test = fold_name(fold)
    if test not in names:
        raise DataError(f"data.fold={fold}: the split file has the folds {', '.join(names)}.")
    parts_a = np.asarray(parts, dtype=object)
    out = np.where(parts_a == test, "test", "train").astype(object)
    pool = np.flatnonzero(parts_a != test)
    val = _take_fraction(np.asarray(labels), np.asarray(groups), pool, val_fraction, seed + fold)
    out[val] = "val"
    return out.tolist()


def make_split(
    labels: Sequence[int],
    groups: Sequence[int],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 42,
) -> list[str]:
    """Assign each case to train/val/test, keeping every group on one side, stratified by class.

    ``test_fraction=0``: no test side (cases only to learn from and to validate or calibrate
    on, e.g. a new site's cases for medmtl-adapt)."""
    labels_a = np.asarray(labels)
    groups_a = np.asarray(groups)
    n = len(labels_a)
    if not 0 <= test_fraction < 1 or not 0 < val_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DataError(
            f"data.split.val_fraction={val_fraction} and test_fraction={test_fraction}: "
            "val_fraction in (0, 1), test_fraction in [0, 1), their sum below 1."
        )
    out = np.array(["train"] * n, dtype=object)
    test_idx = (
        _take_fraction(labels_a, groups_a, np.arange(n), test_fraction, seed)
        if test_fraction > 0
        else np.zeros(0, dtype=np.int64)
    )
    out[test_idx] = "test"
    rest = np.setdiff1d(np.arange(n), test_idx)
    val_idx = _take_fraction(
        labels_a, groups_a, rest, val_fraction / (1.0 - test_fraction), seed + 1
    )
    out[val_idx] = "val"
    return out.tolist()


def _take_fraction(
    labels: np.ndarray, groups: np.ndarray, pool: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """Indices (from ``pool``) of one StratifiedGroupKFold fold of about ``fraction`` of the pool."""
    n_splits = max(2, round(1.0 / fraction))
    n_groups = len(np.unique(groups[pool]))
    if n_groups < n_splits:
        raise DataError(
            f"only {n_groups} near-duplicate groups in a pool of {len(pool)} images: too few to "
            f"split off {fraction:.0%}. Use a larger data set or change data.split fractions."
        )
    present = np.unique(labels[pool])
    smallest = min(int((labels[pool] == c).sum()) for c in present)
    if smallest < n_splits:
        raise DataError(
            f"a class has only {smallest} image(s) in a pool of {len(pool)}: too few for a "
            f"stratified {fraction:.0%} split. Use a larger data set or change data.split fractions."
        )
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, fold_idx = next(iter(sgkf.split(pool, labels[pool], groups[pool])))
    return pool[fold_idx]


def check_given_split(
    split: Sequence[str], groups: Sequence[int], cases: Sequence, source: object
) -> list[str]:
    """A split the data set gives (a split column, published folds), checked before use.

    A patient (the data set's group) on two sides is an error: it leaks. Near duplicates on
    two sides are the data set's choice: logged, and listed in the split file's pairs.
    """
    sides = patient_sides(split, cases)
    crossing = sorted(g for g, s in sides.items() if len(s) > 1)
    if crossing:
        raise DataError(
            f"{source}: {len(crossing)} patient/case group(s) are in more than one split "
            f"({summarize([f'{g}: {sorted(sides[g])}' for g in crossing])}); a patient on both "
            "sides leaks between training and test. Fix the data set's split."
        )
    combined: dict[int, set[str]] = {}
    for g, s in zip(groups, split, strict=True):
        combined.setdefault(int(g), set()).add(s)
    mixed = sum(len(s) > 1 for s in combined.values())
    if mixed:
        log.warning(
            "%s: %d group(s) of near-duplicate images lie on two sides of the data set's own "
            "split (it is used as given; the split file lists the pairs).",
            source,
            mixed,
        )
    return list(split)


def patient_sides(split: Sequence[str], cases: Sequence) -> dict[str, set[str]]:
    """The sides of a split each patient (the data set's group) has images on."""
    sides: dict[str, set[str]] = {}
    for case, s in zip(cases, split, strict=True):
        if case.group is not None:
            sides.setdefault(case.group, set()).add(s)
    return sides


def train_val_mixed(split: Sequence[str], cases: Sequence) -> list[str]:
    """The patients (the data set's groups) that a given split puts on both the training and
    the validation side, and on no other (the repairable mix; a patient in test is not)."""
    return sorted(g for g, s in patient_sides(split, cases).items() if s == {"train", "val"})


def repair_given_split(
    split: Sequence[str], labels: Sequence[int], groups: Sequence[int], seed: int
) -> list[str]:
    """A given split whose validation side shares patients with its training side: the test
    side is kept as given and the validation images are drawn again from the rest, groups
    kept together and stratified, with the given split's share of validation images."""
    share = sum(s == "val" for s in split) / max(1, len(split))
    keep = [s if s == "test" else None for s in split]
    return complete_split(labels, groups, keep, max(share, 0.05), seed)


def complete_split(
    labels: Sequence[int],
    groups: Sequence[int],
    given: Sequence[str | None],
    val_fraction: float,
    seed: int,
) -> list[str]:
    """The data set fixes some cases' split (its published test fold); the others are split
    into train and val here, group-aware and stratified (``val_fraction`` of all cases)."""
    labels_a, groups_a = np.asarray(labels), np.asarray(groups)
    out = np.array([g or "train" for g in given], dtype=object)
    pool = np.flatnonzero([g is None for g in given])
    share = len(pool) / max(1, len(given))
    val_idx = _take_fraction(labels_a, groups_a, pool, min(0.5, val_fraction / share), seed)
    out[val_idx] = "val"
    return out.tolist()


def kfold_train_val(
    split: Sequence[str],
    labels: Sequence[int],
    groups: Sequence[int],
    num_folds: int,
    fold: int,
    seed: int = 42,
) -> list[str]:
    """Re-split the train+val pool into group-aware stratified folds; fold ``fold`` becomes val.

    The test set is left exactly as it is in ``split``.
    """
    if num_folds < 2:
        raise DataError(f"data.num_folds={num_folds}: k-fold needs at least 2 folds.")
    if not 0 <= fold < num_folds:
        raise DataError(
            f"data.fold={fold}: must be in 0..{num_folds - 1} for data.num_folds={num_folds}."
        )
    split_a = np.asarray(split, dtype=object)
    pool = np.flatnonzero(split_a != "test")
    labels_a, groups_a = np.asarray(labels), np.asarray(groups)
    sgkf = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    folds = list(sgkf.split(pool, labels_a[pool], groups_a[pool]))
    out = split_a.copy()
    out[pool] = "train"
    out[pool[folds[fold][1]]] = "val"
    return out.tolist()


def write_split_file(
    path: str | Path,
    case_ids: Sequence[str],
    labels: Sequence[int],
    class_names: Sequence[str],
    split: Sequence[str],
    groups: Sequence[int],
    settings: dict,
    pairs: Sequence[tuple[int, int, float]] = (),
    parts: Sequence[str] = SPLITS,
) -> None:
    """Write the split file (atomically: a crash never leaves half a file). ``split``: each
    case's part, one of ``parts`` (the splits, or the cross-validation folds)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(int(g), []).append(i)
    multi = {g: m for g, m in members.items() if len(m) > 1}
    mixed = [
        sorted(case_ids[i] for i in m) for m in multi.values() if len({labels[i] for i in m}) > 1
    ]
    doc = {
        "format": SPLIT_FORMAT_VERSION,
        "settings": settings,
        "counts": {
            s: dict(Counter(class_names[labels[i]] for i in range(len(split)) if split[i] == s))
            for s in parts
        },
        "num_groups_with_duplicates": len(multi),
        "mixed_class_groups": sorted(mixed),
        "duplicate_pairs": [
            [case_ids[i], case_ids[j], round(c, 4)]
            for i, j, c in sorted(pairs, key=lambda p: -p[2])
        ],
        "cases": {
            cid: {"split": s, "group": int(g)}
            for cid, s, g in zip(case_ids, split, groups, strict=True)
        },
    }
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def read_split_file(
    path: str | Path, case_ids: Sequence[str], folds: int | None = None
) -> tuple[list[str], list[int], dict]:
    """Read a split file and check it covers exactly ``case_ids`` and is of the kind asked for
    (``folds`` None: a train/val/test split; K: K cross-validation folds); returns each case's
    part (split or fold), the groups and the document."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        entries = doc["cases"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: not a readable medmtl split file ({exc}). Delete it to write a new one "
            "(`medmtl-data split`), or restore it from git."
        ) from exc
    known = set(entries)
    missing = [c for c in case_ids if c not in known]
    extra = sorted(known - set(case_ids))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} image(s) not in the file (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} listed image(s) not found (e.g. {extra[0]})")
        raise DataError(
            f"{path}: split file does not match the data set: {'; '.join(parts)}. Check data.root; "
            "if the data set really changed, write a new split with `medmtl-data split force=true` "
            "(results will no longer be comparable with earlier runs)."
        )
    written = (doc.get("settings") or {}).get("folds")
    if (written or None) != (folds or None):
        has = f"{written} cross-validation folds" if written else "a train/val/test split"
        wants = f"data.split.folds={folds}" if folds else "a fixed split (data.split.folds=null)"
        raise DataError(
            f"{path}: the split file holds {has}, but the run asks for {wants}. Set "
            "data.split_file to another file, or set data.split.folds to match."
        )
    parts = split_parts(folds)
    bad = {e.get("split") for e in entries.values()} - set(parts)
    if bad:
        raise DataError(f"{path}: unknown split name(s) {sorted(map(str, bad))}; expected {parts}.")
    return (
        [entries[c]["split"] for c in case_ids],
        [int(entries[c]["group"]) for c in case_ids],
        doc,
    )


def fold_of(data: Mapping[str, Any]) -> int | None:
    """The fold a run's data settings select: ``data.fold`` with ``data.num_folds`` or
    ``data.split.folds``, or that of the combined data set that is split into folds
    (``data.sets.<name>``, e.g. the multi-site recipe's BUSI); None for a fixed split."""
    if data.get("num_folds") or cv_folds_of(data):
        return int(data.get("fold") or 0)
    for sub in (data.get("sets") or {}).values():
        if sub is not None and sub.get("num_folds"):
            return int(sub.get("fold") or 0)
    return None

"""Indexes of class-folder data sets (BUSI and any data set laid out like it).

Layout: ``<root>/<class>/<name>.<ext>`` with masks ``<name>_mask.<ext>`` and, for images with
several lesions, ``<name>_mask_1.<ext>``, ``<name>_mask_2.<ext>`` ...: each is a lesion of its own
(:func:`medmtl.data.cache.lesion_labels`), and the network learns their union.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from medmtl.errors import DataError, summarize
from medmtl.io.image import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)
_MASK_RE = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<n>\d+))?$")


@dataclass(frozen=True)
class Case:
    """One image with its mask files and class label, and what else the data set says of it."""

    case_id: str  # the image path relative to the data set's folder; used by split files
    image: Path
    masks: tuple[Path, ...]
    label: int
    class_name: str
    group: str | None = None  # patient or case id: one group stays on one side of every split
    dataset: str = ""  # the data set it comes from (data=multi combines several)
    meta: dict[str, str] = field(default_factory=dict, compare=False)  # device, side, ...
    split: str | None = None  # a split the data set gives (train | val | test), else None


@dataclass
class DatasetIndex:
    """All cases of a data set plus what was found but not used (reported, never dropped silently)."""

    root: Path
    classes: tuple[str, ...]
    cases: list[Case]
    # (file or folder, why it is not used): listed by the audit and logged by training
    ignored_files: list[tuple[Path, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # only filled when indexed with strict=False

    def counts(self) -> dict[str, int]:
        """Number of cases per class, in class order."""
        return {c: sum(case.class_name == c for case in self.cases) for c in self.classes}


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def folders_not_found(root: Path, root_hint: str, classes: Sequence[str]) -> DataError:
    """The one line for a data folder of class folders that is not there."""
    return DataError(
        f"{root}: data folder not found. Set {root_hint} to the folder that holds the class "
        f"folders {', '.join(classes)}."
    )


def index_class_folders(
    root: str | Path,
    classes: Sequence[str],
    mask_optional_classes: Sequence[str] = (),
    root_hint: str = "data.root",
    strict: bool = True,
    drop_empty_classes: bool = False,
) -> DatasetIndex:
    """Index ``root`` and check its layout.

    Raises :class:`DataError` for a missing or empty root, a missing or unknown class folder,
    an image without a mask (unless its class is in ``mask_optional_classes``, which then gets
    an empty mask), a mask without an image and a class folder without images (with
    ``drop_empty_classes`` such a class is left out of ``classes`` instead, with a warning).
    Other files, subfolders of class folders and hidden files are listed in ``ignored_files``.
    With ``strict=False`` (the audit) file problems are collected in ``problems`` instead.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise folders_not_found(root, root_hint, classes)
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise DataError(
            f"{root}: folder is empty or has no class folders; expected {', '.join(classes)}. "
            f"Point {root_hint} at the data set."
        )
    unknown = [d for d in subdirs if d not in classes]
    if unknown:
        raise DataError(
            f"{root}: unknown class folder(s) {', '.join(unknown)}; expected only "
            f"{', '.join(classes)}. Move them out or list them in data.classes."
        )
    missing = [c for c in classes if c not in subdirs]
    if missing:
        raise DataError(
            f"{root}: class folder(s) {', '.join(missing)} missing. Check {root_hint} or data.classes."
        )

    cases: list[Case] = []
    ignored: list[tuple[Path, str]] = []
    problems: list[str] = []
    for label, cls in enumerate(classes):
        images: dict[str, Path] = {}
        masks: dict[str, list[tuple[int, Path]]] = {}
        for path in sorted((root / cls).iterdir(), key=lambda p: _natural_key(p.name)):
            if path.is_dir():
                ignored.append(
                    (path, "a subfolder of a class folder (only files directly in it are read)")
                )
                continue
            if path.name.startswith("."):
                ignored.append((path, "a hidden file (name starts with '.')"))
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                ignored.append((path, f"not an image file (extension '{path.suffix or 'none'}')"))
                continue
            m = _MASK_RE.match(path.stem)
            if m:
                masks.setdefault(m["stem"], []).append((int(m["n"] or 0), path))
            else:
                images[path.stem] = path
        for stem in sorted(set(masks) - set(images), key=_natural_key):
            problems.append(f"{masks[stem][0][1]}: mask without an image named {stem}.*")
        for stem, img in images.items():
            mask_files = tuple(p for _, p in sorted(masks.get(stem, [])))
            if not mask_files and cls not in mask_optional_classes:
                problems.append(f"{img}: image without a mask (expected {stem}_mask{img.suffix})")
                continue
            cases.append(Case(f"{cls}/{img.name}", img, mask_files, label, cls))
    empty = [c for c in classes if not any(case.class_name == c for case in cases)]
    if empty and drop_empty_classes and len(empty) < len(classes):
        log.warning(
            "%s: no images in class(es) %s; training without them (data.drop_empty_classes=true).",
            root,
            ", ".join(empty),
        )
        classes = [c for c in classes if c not in empty]
        cases = [replace(c, label=classes.index(c.class_name)) for c in cases]
    else:
        problems += [
            f"{root / c}: class folder has no images; add its images, fix data.classes, or set "
            "data.drop_empty_classes=true to train without this class"
            for c in empty
        ]
    if problems and strict:
        raise DataError(
            f"{len(problems)} file problem(s) in {root}: {summarize(problems, 5)}. Fix these; "
            "`medmtl-data audit` lists every problem of the data set."
        )
    if not cases:
        raise DataError(f"{root}: no images found in {', '.join(classes)}.")
    return DatasetIndex(
        root=root, classes=tuple(classes), cases=cases, ignored_files=ignored, problems=problems
    )

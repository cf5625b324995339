"""Where results go: one output file per input (folder structure kept), written atomically."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from medmtl.errors import ConfigError, DataError
from medmtl.io.files import atomic_path
from medmtl.io.image import IMAGE_EXTENSIONS, is_dicom


@dataclass
class FolderPlan:
    """Files to process and where each result goes; skipped files are kept for the report."""

    items: list[tuple[Path, Path]] = field(default_factory=list)  # (input, output PNG)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    missing: list[tuple[Path, str]] = field(default_factory=list)  # listed, but not there


def _is_candidate(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS or (path.suffix == "" and is_dicom(path))


def check_out_outside_input(inp: Path, out: Path, out_option: str = "output") -> Path:
    """Refuse a missing input and an output folder that is the input folder or inside it;
    returns the folder the outputs mirror (the input folder, or a file's folder)."""
    inp, out = inp.expanduser(), out.expanduser()
    if not inp.exists():
        raise DataError(f"{inp}: input not found.")
    base = inp if inp.is_dir() else inp.parent
    out_r, base_r = out.resolve(), base.resolve()
    if out_r == base_r or (inp.is_dir() and base_r in out_r.parents):
        raise ConfigError(
            f"{out_option}={out} is the input folder or inside it; choose an output folder "
            f"outside {base} (inputs are never overwritten)."
        )
    return base


def plan_outputs(inp: Path, out: Path, out_option: str = "output") -> FolderPlan:
    """Map every input file to its own output PNG under ``out``, mirroring the folder structure.

    Refuses an output folder that is the input folder or lies inside it, so inputs are never
    overwritten and outputs never become inputs of the next run. File names are kept (Unicode
    included); ``a.png`` and ``a.dcm`` in one folder become ``a.png`` and ``a.dcm.png`` (and a
    numbered suffix on any further clash). Hidden files and broken links are listed as skipped.
    """
    inp, out = inp.expanduser(), out.expanduser()
    base = check_out_outside_input(inp, out, out_option)
    files: Iterable[Path] = sorted(inp.rglob("*")) if inp.is_dir() else [inp]
    return plan_files(files, base, out)


def plan_files(files: Iterable[Path], base: Path, out: Path) -> FolderPlan:
    """Map each file to its own output PNG under ``out``, by its path relative to ``base``
    (its name alone if it lies elsewhere); see :func:`plan_outputs`."""
    plan = FolderPlan()
    taken: set[str] = set()
    for f in files:
        if f.is_dir():
            continue
        if f.is_symlink() and not f.exists():
            plan.skipped.append((f, "a broken symbolic link (its target does not exist)"))
            continue
        if not f.exists():  # named in a list of inputs, but not there
            plan.missing.append((f, "file not found"))
            continue
        if f.name.startswith("."):
            plan.skipped.append((f, "a hidden file (name starts with '.')"))
            continue
        if not _is_candidate(f):
            plan.skipped.append((f, f"not an image file (extension '{f.suffix or 'none'}')"))
            continue
        try:
            rel = f.relative_to(base)
        except ValueError:
            rel = Path(f.name)
        target = out / rel.with_suffix(".png")
        n = 1
        while target.as_posix().casefold() in taken:  # a.png and a.dcm in one folder
            target = out / rel.parent / f"{rel.name}{f'_{n}' if n > 1 else ''}.png"
            n += 1
        taken.add(target.as_posix().casefold())
        plan.items.append((f, target))
    return plan


def write_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG atomically and with no metadata chunks (nothing from the source header)."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")

"""A site's corrected cases: what a clinician saves from the page (``medmtl-serve
site_dir=<folder>``) for ``medmtl-adapt site=<folder>/cases.csv``.

The folder never leaves the machine the server runs on::

    <site_dir>/cases.csv                 the manifest, in medmtl's CSV form
    <site_dir>/cases/<case>/image.<ext>  the upload, byte for byte (a DICOM stays a DICOM)
    <site_dir>/cases/<case>/mask.png     the corrected lesion mask (0/255, every lesion; empty
                                         for a class without lesions)
    <site_dir>/cases/<case>/seg.dcm      for a DICOM upload: the mask as a DICOM SEG that
                                         references it (highdicom; semi-automatic: the model's
                                         mask, corrected by a person)

A case is named by the first 16 hex digits of its image's SHA-256: saving the same image again
replaces its mask and class. Every file is written beside its final name and renamed into
place, the case folder as a whole, and the manifest last; a case that cannot be saved leaves
the folder as it was.
"""

from __future__ import annotations

import csv
import hashlib
import re
import shutil
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from medmtl.errors import DataError
from medmtl.io.files import CsvRows, atomic_path, ensure_output_dir, file_sha256
from medmtl.io.image import is_dicom, read_image
from medmtl.io.outputs import write_png

CASES_CSV = "cases.csv"
# the manifest's columns: medmtl's four, then what the page shows of a case
FIELDS = ["image", "mask", "label", "group", "case", "uploaded_as", "seg", "lesion_px", "saved"]
CASE_ID = re.compile(r"^[0-9a-f]{16}$")


def case_id(path: Path) -> str:
    """A case's name: the first 16 hex digits of its image file's SHA-256."""
    return file_sha256(path)[:16]


def lesion_count(mask: np.ndarray) -> int:
    """The number of separate lesions (8-connected parts) of a mask."""
    import cv2

    count, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return int(count) - 1


class SiteCases:
    """The corrected cases of one site folder (see the module's docstring).

    ``classes``: the model's; ``empty_class``: the one whose images have no lesion (its mask
    must be empty; the others need one drawn); ``algorithm``: the model, named in a DICOM SEG.
    """

    def __init__(
        self,
        root: str | Path,
        classes: list[str],
        empty_class: str | None = None,
        algorithm: Any = None,
    ) -> None:
        self.root = ensure_output_dir(root, "site_dir")
        self.classes = list(classes)
        self.empty_class = empty_class
        self.algorithm = algorithm
        self.manifest = self.root / CASES_CSV
        self._lock = threading.Lock()  # the server answers requests on several threads

    # -- reading ------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, str]]:
        """The manifest's rows (none before the first case)."""
        if not self.manifest.exists():
            return []
        try:
            with self.manifest.open(newline="", encoding="utf-8") as fh:
                return list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{self.manifest}: not a readable case list ({exc}).") from exc

    def _row(self, rows: list[dict[str, str]], case: str) -> dict[str, str]:
        """The manifest row of ``case``, or a KeyError saying there is no such case."""
        if not CASE_ID.match(case or ""):
            raise KeyError(f"{case!r} is not a case name (16 hex digits).")
        for row in rows:
            if row.get("case") == case:
                return row
        raise KeyError(f"no saved case {case} in this site folder.")

    def read(self, case: str) -> tuple[dict[str, str], Path, np.ndarray]:
        """A saved case's row, its image file and its mask."""
        from medmtl.io.image import read_mask

        row = self._row(self.rows(), case)
        return row, self.root / row["image"], read_mask(self.root / row["mask"])

    # -- writing ------------------------------------------------------------------------------
    def save(
        self, upload: Path, name: str, mask: np.ndarray, label: str, group: str | None = None
    ) -> tuple[dict[str, str], bool]:
        """Save one corrected case: the uploaded file ``upload`` (as the user named it,
        ``name``), its lesion ``mask`` (at the image's size) and its class. Returns its row
        and whether it replaced the same image's earlier correction. A DataError names what
        is wrong with the case; nothing is written then. A DICOM that cannot have a SEG
        (it lacks what a SEG copies) is saved without one: the row's ``seg_error`` says why."""
        if label not in self.classes:
            raise DataError(
                f"{name}: class {label!r} is not one of the model's ({', '.join(self.classes)})."
            )
        raw, meta = read_image(upload)
        shape = raw.shape[:2]
        mask = np.asarray(mask).astype(bool)
        if mask.shape != shape:
            raise DataError(
                f"{name}: the mask is {mask.shape[1]} x {mask.shape[0]} pixels, the image "
                f"{shape[1]} x {shape[0]}; draw the mask on this image."
            )
        lesions = lesion_count(mask)
        if label == self.empty_class and lesions:
            raise DataError(
                f"{name}: a {label} case has no lesion, but {lesions} lesion(s) are drawn; erase "
                "them or choose another class."
            )
        if label != self.empty_class and not lesions:
            raise DataError(
                f"{name}: a {label} case needs its lesion drawn (the mask is empty); draw it, or "
                f"choose {self.empty_class or 'another class'}."
            )
        dicom = is_dicom(upload)
        case = case_id(upload)
        suffix = ".dcm" if dicom else (Path(name).suffix.lower() or upload.suffix.lower())
        row = {
            "image": f"cases/{case}/image{suffix}",
            "mask": f"cases/{case}/mask.png",
            "label": label,
            "group": group or (_patient_group(upload) if dicom else None) or case,
            "case": case,
            "uploaded_as": Path(name).name,
            "seg": f"cases/{case}/seg.dcm" if dicom else "",
            "lesion_px": str(int(mask.sum())),
            "saved": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with self._lock:
            target = self.root / "cases" / case
            replaced = target.exists()
            with atomic_path(target) as tmp:
                tmp.mkdir(parents=True)
                shutil.copyfile(upload, tmp / f"image{suffix}")
                write_png(mask.astype(np.uint8) * 255, tmp / "mask.png")
                if dicom:
                    try:
                        self._write_seg(upload, tmp / "seg.dcm", mask, meta, label)
                    except DataError as exc:  # the correction is kept; only its SEG is not
                        row["seg"] = ""
                        row["seg_error"] = str(exc).split(": ", 1)[-1]
                old = self._set_aside(target)
            try:
                self._write_rows([r for r in self.rows() if r.get("case") != case] + [row])
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                if old is not None:
                    old.rename(target)
                raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return row, replaced

    def delete(self, case: str) -> dict[str, str]:
        """Remove a saved case: its row first, then its files. Returns the row removed."""
        with self._lock:
            rows = self.rows()
            row = self._row(rows, case)
            self._write_rows([r for r in rows if r is not row])
            shutil.rmtree(self.root / "cases" / case, ignore_errors=True)
        return row

    def _set_aside(self, target: Path) -> Path | None:
        """Move an earlier version of a case folder out of the way (removed once the new
        one is in the manifest)."""
        if not target.exists():
            return None
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        target.rename(old)
        return old

    def _write_rows(self, rows: list[dict[str, str]]) -> None:
        out = CsvRows(self.manifest, FIELDS)
        for row in rows:
            out.add(row)
        out.close()

    def _write_seg(
        self, source_path: Path, path: Path, mask: np.ndarray, meta: Any, label: str
    ) -> None:
        from medmtl.inference.dicom_out import (
            DicomOutput,
            check_seg_source,
            lesion_seg,
            read_source,
        )

        source = read_source(source_path)
        check_seg_source(source, source_path)
        seg = lesion_seg(source, mask, None, meta, DicomOutput(self.algorithm),
                         f"{label}; lesion corrected by a reader", corrected=True)  # fmt: skip
        seg.save_as(str(path), enforce_file_format=True)


def _patient_group(path: Path) -> str | None:
    """A DICOM's patient as a pseudonym (the split keeps a patient's cases together; the
    manifest does not name the patient)."""
    import pydicom

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    patient = str(ds.get("PatientID", "") or "")
    return "patient-" + hashlib.sha256(patient.encode()).hexdigest()[:12] if patient else None

"""Nothing that identifies a person leaves a DICOM header: not in metadata, logs, PNGs or figures."""

from __future__ import annotations

import pydicom
import pytest

from medmtl.io import read_image
from tests.conftest import DICOM_DIR, run_cli

PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-12345-XYZ",
    "PatientBirthDate": "19700101",
    "AccessionNumber": "ACC-98765",
    "InstitutionName": "St Example Hospital",
    "StudyDate": "20240229",
    "SeriesDate": "20240229",
    "AcquisitionDate": "20240229",
    "ReferringPhysicianName": "Dr^Who",
    "OtherPatientIDs": "OTHER-555",
}
# strings that would betray the PHI in any output (dates also as written by some tools)
NEEDLES = [v for v in PHI.values()] + ["Doe", "Jane", "2024-02-29", "Example Hospital"]


@pytest.fixture
def phi_dicom(tmp_path):
    ds = pydicom.dcmread(DICOM_DIR / "US1_UNCR.dcm")
    for key, value in PHI.items():
        setattr(ds, key, value)
    folder = tmp_path / "in"
    folder.mkdir()
    ds.save_as(folder / "scan.dcm")
    return folder / "scan.dcm"


def test_metadata_record_has_no_phi(phi_dicom):
    _, meta = read_image(phi_dicom)
    text = repr(meta) + str(meta.as_dict())
    for needle in NEEDLES:
        assert needle not in text


def test_preprocess_outputs_and_logs_have_no_phi(phi_dicom, tmp_path):
    out = tmp_path / "out"
    res = run_cli(
        "preprocess", f"input={phi_dicom.parent}", f"output={out}", "compare=true", timeout=300
    )
    assert res.returncode == 0, res.stderr
    files = list(out.rglob("*"))
    assert {f.name for f in files} == {"scan.png", "scan_compare.png"}
    blobs = [res.stdout.encode(), res.stderr.encode()] + [
        f.read_bytes() for f in files if f.is_file()
    ]
    for needle in NEEDLES:
        for blob in blobs:
            assert needle.encode() not in blob, needle
    from PIL import Image

    with Image.open(out / "scan.png") as im:
        assert not {k for k in im.info if k not in ("dpi",)}  # no text chunks at all

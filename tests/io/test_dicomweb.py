"""A study from a real archive (Orthanc over DICOMweb), predicted, and its SEGs stored back."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLossless, generate_uid

from medmtl.errors import ConfigError, DataError
from medmtl.io.dicomweb import StudyAddress
from tests.archive import PASSWORD, USER, orthanc
from tests.conftest import DICOM_DIR, partial_mask_threshold, run_cli

US1 = DICOM_DIR / "US1_UNCR.dcm"


def _in_study(path: Path, study: pydicom.Dataset, target: Path, **changes) -> Path:
    """A copy of ``path`` filed in ``study`` (same patient), as another series."""
    ds = pydicom.dcmread(path)
    for key in ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyTime"):
        if key in study:
            setattr(ds, key, study.get(key))
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(target, enforce_file_format=True)
    return target


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Orthanc holding one study: the US image, a CT series and a compressed US image without
    its codec, as a PACS might."""
    folder = tmp_path_factory.mktemp("orthanc")
    study = pydicom.dcmread(US1)
    ct = _in_study(DICOM_DIR / "CT_small.dcm", study, folder / "ct.dcm")
    jpeg = pydicom.dcmread(US1)
    jpeg.file_meta.TransferSyntaxUID = JPEGLossless
    jpeg.PixelData = encapsulate([b"\xff\xd8\xff\xc3broken\xff\xd9"])
    jpeg["PixelData"].VR = "OB"
    jpeg.SeriesInstanceUID, jpeg.SOPInstanceUID = generate_uid(), generate_uid()
    jpeg.save_as(folder / "jpeg.dcm")
    with orthanc(folder / "server") as server:
        for f in (US1, ct, folder / "jpeg.dcm"):
            server.upload(f)
        yield server, study, jpeg.SOPInstanceUID


def _rows(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "predictions.csv").open()))


def test_round_trip_stores_a_seg_equal_to_the_png_mask(archive, tiny_ckpt, tmp_path):
    import highdicom as hd

    server, study, jpeg_uid = archive
    out = tmp_path / "out"
    env = {**__import__("os").environ, "DICOMWEB_PASSWORD": PASSWORD}
    threshold = partial_mask_threshold(tiny_ckpt, US1)
    res = run_cli("predict", f"ckpt_path={tiny_ckpt}", f"out={out}", "dicom_seg=true",
                  f"input={server.dicomweb}/studies/{study.StudyInstanceUID}", "push=true",
                  f"user={USER}", f"threshold={threshold}", env=env)  # fmt: skip
    # one US image predicted and stored; the CT skipped; the compressed one failed, named
    assert res.returncode == 1, res.stderr[-2000:]
    assert "2 result(s) (SEG, SR) stored in the archive" in res.stdout
    assert "not an ultrasound image (modality CT)" in res.stdout
    assert f"{jpeg_uid}.dcm" in res.stderr and "pylibjpeg" in res.stderr
    (row,) = _rows(out)
    assert Path(row["file"]).name == f"{study.SOPInstanceUID}.dcm"
    # read back from the archive: the SEG series of the study, with its reference and mask
    series = server.rest("GET", f"/dicom-web/studies/{study.StudyInstanceUID}/series").json()
    segs = [s for s in series if s["00080060"]["Value"] == ["SEG"]]
    assert len(segs) == 1 and sum(s["00080060"]["Value"] == ["SR"] for s in series) == 1
    uid = segs[0]["0020000E"]["Value"][0]
    instances = server.rest(
        "GET", f"/dicom-web/studies/{study.StudyInstanceUID}/series/{uid}/instances"
    ).json()
    (inst,) = instances
    assert inst["00080018"]["Value"][0] == row["seg_sop_instance_uid"]
    orthanc_id = server.rest("POST", "/tools/lookup", data=row["seg_sop_instance_uid"]).json()
    raw = server.rest("GET", f"/instances/{orthanc_id[0]['ID']}/file").content
    stored = tmp_path / "stored_seg.dcm"
    stored.write_bytes(raw)
    seg = hd.seg.segread(stored)
    assert seg.StudyInstanceUID == study.StudyInstanceUID
    ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert ref.ReferencedSOPInstanceUID == study.SOPInstanceUID
    pixels = seg.get_pixels_by_source_instance([study.SOPInstanceUID], combine_segments=True)
    png = np.asarray(Image.open(out / row["mask_file"])) > 0
    assert png.any() and not png.all(), png.mean()  # a mask with something to compare
    assert np.array_equal(pixels[0] > 0, png)


def _predict(tiny_ckpt, out: Path, address: str, **options):
    from medmtl.settings.commands import PredictSettings
    from medmtl.workflows.predict import predict

    settings = PredictSettings(ckpt_path=str(tiny_ckpt), input=address, out=str(out), **options)
    return predict(settings)


@pytest.mark.parametrize(
    "address, password, message",
    [
        ("studies/1.2.3.4.5.6.7", PASSWORD, "studies/1.2.3.4.5.6.7: not found in the archive"),
        (None, "wrong", "refused the credentials (HTTP 401)"),
    ],
)
def test_a_missing_study_or_refused_credentials_is_one_line(
    archive, tiny_ckpt, tmp_path, monkeypatch, address, password, message
):
    server, study, _ = archive
    monkeypatch.setenv("DICOMWEB_PASSWORD", password)
    where = f"{server.dicomweb}/{address or f'studies/{study.StudyInstanceUID}'}"
    with pytest.raises(DataError, match=re.escape(message)):
        _predict(tiny_ckpt, tmp_path / "o", where, user=USER)
    assert not (tmp_path / "o" / "retrieved").exists() or not any(
        (tmp_path / "o" / "retrieved").iterdir()
    )


def test_an_address_of_another_form_is_refused_before_any_request(tiny_ckpt, tmp_path):
    res = run_cli("predict", f"ckpt_path={tiny_ckpt}", f"out={tmp_path / 'o'}",
                  "input=dicomweb://127.0.0.1:9/dicom-web/series")  # fmt: skip
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("medmtl: error: ")]
    assert res.returncode == 2 and len(errors) == 1, res.stderr[-1500:]
    assert "expected dicomweb://<host>:<port>/<prefix>/studies/<StudyInstanceUID>" in errors[0]


def test_an_archive_that_refuses_the_upload_is_one_line(tiny_ckpt, tmp_path, monkeypatch):
    refuse = "function ReceivedInstanceFilter(dicom, origin, info)\n" \
             "  return dicom.Modality ~= 'SEG'\nend\n"  # fmt: skip
    study = pydicom.dcmread(US1)
    monkeypatch.setenv("DICOMWEB_PASSWORD", PASSWORD)
    with orthanc(tmp_path / "server", lua=refuse) as server:
        server.upload(US1)
        address = f"{server.dicomweb}/studies/{study.StudyInstanceUID}"
        with pytest.raises(DataError, match=r"refused \(or did not keep\) 1 of 1 .*stored: none"):
            _predict(tiny_ckpt, tmp_path / "o", address, dicom_seg=True, push=True, user=USER)
        series = server.rest("GET", f"/dicom-web/studies/{study.StudyInstanceUID}/series").json()
        # nothing half-stored: the report is not sent without its segmentation
        assert [s["00080060"]["Value"] for s in series] == [["US"]]
    # the results stay on disk
    assert (tmp_path / "o" / f"{study.SOPInstanceUID}_seg.dcm").is_file()


def test_addresses_and_push_are_checked_before_any_request():
    a = StudyAddress.parse("dicomweb://pacs:8042/dicom-web/studies/1.2.3")
    assert (a.service, a.study_uid) == ("http://pacs:8042/dicom-web", "1.2.3")
    assert StudyAddress.parse("dicomwebs://pacs/studies/1.2").service == "https://pacs"
    with pytest.raises(ConfigError, match="credentials do not belong"):
        StudyAddress.parse("dicomweb://u:p@pacs:8042/dicom-web/studies/1.2.3")
    from medmtl.settings.commands import PredictSettings

    with pytest.raises(ConfigError, match="push=true stores the SEGs back"):
        PredictSettings(input="/x", out="/y", push=True, dicom_seg=True)

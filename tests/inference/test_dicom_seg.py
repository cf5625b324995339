"""medmtl-predict dicom_seg=true: a DICOM SEG a PACS viewer opens, on the source's own grid."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from medmtl.settings.commands import PredictSettings
from medmtl.workflows.predict import predict
from tests.conftest import DICOM_DIR, partial_mask_threshold

US = ("US1_UNCR.dcm", "gdcm-US-ALOKA-16.dcm")
# what a SEG may share with its source: the patient and study (a PACS files it with them),
# the frame of reference and what highdicom derives from the image (size, references)
ALLOWED_FROM_SOURCE = {
    # patient and patient-study
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDsSequence",
    "PatientAge", "PatientWeight", "PatientSize", "AdditionalPatientHistory", "EthnicGroup",
    "PatientComments", "IssuerOfPatientID", "PatientBirthTime",
    # general study
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
    "ReferringPhysicianName", "StudyDescription",
    # frame of reference, image size, character set
    "FrameOfReferenceUID", "PositionReferenceIndicator", "Rows", "Columns", "SpecificCharacterSet",
    # equal by chance
    "Modality", "SeriesNumber", "InstanceNumber", "ContentDate", "ContentTime",
    "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "PhotometricInterpretation", "ImageType", "InstanceCreationDate", "InstanceCreationTime",
}  # fmt: skip
# what identifies the place, staff and device of the source: never copied into a SEG or SR
PRIVATE = ("InstitutionName", "OperatorsName", "DeviceSerialNumber", "StationName")


def _rows(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "predictions.csv").open()))


@pytest.fixture(scope="module")
def predicted(tiny_ckpt, tmp_path_factory) -> tuple[Path, Path]:
    src = tmp_path_factory.mktemp("in")
    for name in US:
        shutil.copy(DICOM_DIR / name, src / name)
    Image.fromarray(np.full((64, 80), 90, np.uint8)).save(src / "plain.png")
    out = tmp_path_factory.mktemp("pred") / "out"
    threshold = partial_mask_threshold(tiny_ckpt, src / US[0])
    predict(PredictSettings(ckpt_path=str(tiny_ckpt), input=str(src), out=str(out),
                            dicom_seg=True, threshold=threshold))  # fmt: skip
    return src, out


def test_every_dicom_input_gets_a_seg_that_references_it_on_its_grid(predicted):
    import highdicom as hd

    src, out = predicted
    rows = {Path(r["file"]).name: r for r in _rows(out)}
    assert set(rows) == {*US, "plain.png"}
    assert rows["plain.png"]["seg_file"] == ""  # no DICOM source: nothing to reference
    for name in US:
        row = rows[name]
        source = pydicom.dcmread(src / name)
        seg = hd.seg.segread(out / row["seg_file"])
        assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
        assert str(seg.SOPInstanceUID) == row["seg_sop_instance_uid"]
        assert seg.StudyInstanceUID == source.StudyInstanceUID
        assert seg.SeriesInstanceUID != source.SeriesInstanceUID
        ref = seg.ReferencedSeriesSequence[0]
        assert ref.SeriesInstanceUID == source.SeriesInstanceUID
        assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        segment = seg.SegmentSequence[0]
        assert segment.SegmentLabel == "lesion" and segment.SegmentAlgorithmType == "AUTOMATIC"
        assert segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "medmtl"
        pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=True)
        png = np.asarray(Image.open(out / row["mask_file"])) > 0
        assert pixels.shape[1:] == (source.Rows, source.Columns) == png.shape
        assert np.array_equal(pixels[0] > 0, png)  # the PNG mask, pixel for pixel
        assert int(row["lesion_area_px"]) == int(png.sum())
        if name == US[0]:  # a mask that covers part of the image: the check has something to see
            assert png.any() and not png.all(), png.mean()
        sr = hd.sr.srread(out / row["sr_file"])
        assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
        assert sr.StudyInstanceUID == source.StudyInstanceUID
        (group,) = sr.content.get_planar_roi_measurement_groups()
        region = group.referenced_segmentation_frame
        assert region.referenced_sop_instance_uid == seg.SOPInstanceUID
        values = {m.name.meaning: m.value for m in group.get_measurements()}
        area = float(row["lesion_area_mm2"] or row["lesion_area_px"])
        assert values["Area"] == pytest.approx(area)
        cls = row["predicted_class"]
        assert values[f"Probability of {cls}"] == pytest.approx(float(row[f"prob_{cls}"]))
        (evaluation,) = group.get_qualitative_evaluations()
        assert evaluation.value.meaning == cls
        result = json.loads((out / row["result_file"]).read_text())
        assert result["seg_file"] == Path(row["seg_file"]).name
        assert result["predicted_class"] == row["predicted_class"]
        assert seg.ContentDescription.startswith(f"medmtl; {row['predicted_class']} ")


def test_a_seg_carries_the_patient_and_study_and_nothing_else_of_its_source(predicted):
    src, out = predicted
    for name in US:
        source = pydicom.dcmread(src / name)
        for suffix in ("_seg.dcm", "_sr.dcm"):
            seg = pydicom.dcmread(out / name.replace(".dcm", suffix))
            assert seg.PatientName == source.PatientName and seg.PatientID == source.PatientID
            shared = {
                e.keyword
                for e in seg
                if e.keyword
                and e.keyword in source
                and e.keyword != "PixelData"
                and seg[e.keyword].value == source[e.keyword].value
            }
            extra = shared - ALLOWED_FROM_SOURCE
            assert extra == set(), (suffix, sorted(extra))
            present = [k for k in PRIVATE if k in source]
            assert present, f"{name}: none of {PRIVATE} to check"
            for private in present:
                assert seg.get(private) != source.get(private), private
        # the sidecar and the CSV hold no patient data
        text = (out / name.replace(".dcm", "_result.json")).read_text()
        text += (out / "predictions.csv").read_text()
        for key in ("PatientName", "PatientID", "PatientBirthDate"):
            value = str(source.get(key) or "")
            if len(value) > 3:
                assert value not in text, key


def test_fractional_seg_and_a_frame_of_a_multi_frame_source(tiny_ckpt, tmp_path):
    import highdicom as hd

    source = pydicom.dcmread(DICOM_DIR / "US1_UNCR.dcm")
    frames = np.stack([source.pixel_array, source.pixel_array[::-1], source.pixel_array])
    source.PixelData = frames.tobytes()
    source.NumberOfFrames = 3
    source.SOPInstanceUID = pydicom.uid.generate_uid()
    src = tmp_path / "in"
    src.mkdir()
    source.save_as(src / "cine.dcm", enforce_file_format=True)
    out = tmp_path / "out"
    predict(PredictSettings(ckpt_path=str(tiny_ckpt), input=str(src), out=str(out),
                            dicom_seg=True, seg_type="fractional", frame=1))  # fmt: skip
    (row,) = _rows(out)
    seg = hd.seg.segread(out / row["seg_file"])
    assert seg.SegmentationType == "FRACTIONAL" and seg.SegmentationFractionalType == "PROBABILITY"
    refs = [r for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence]
    assert [r.ReferencedFrameNumber for r in refs] == [2]  # frame=1, 1-based in DICOM
    assert refs[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    probability = seg.pixel_array.astype(float) / float(seg.MaximumFractionalValue)
    mask = np.asarray(Image.open(out / row["mask_file"])) > 0
    assert probability.shape[-2:] == mask.shape
    # the binary mask is the probability map at the threshold (post-processing aside)
    if mask.any():
        assert probability.reshape(mask.shape)[mask].min() >= 0.45


def test_dicom_seg_needs_a_segmentation_head_and_a_readable_image(tiny_ckpt, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    ds = pydicom.dcmread(DICOM_DIR / "US1_UNCR.dcm")
    del ds.PixelData
    ds.save_as(src / "report.dcm")
    shutil.copy(DICOM_DIR / "US1_UNCR.dcm", src / "ok.dcm")
    out = tmp_path / "out"
    summary = predict(PredictSettings(ckpt_path=str(tiny_ckpt), input=str(src), out=str(out),
                                      dicom_seg=True))  # fmt: skip
    assert [p.name for p, _ in summary.failed] == ["report.dcm"]
    assert "without pixel data" in summary.failed[0][1]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("report")) == []
    assert (out / "ok_seg.dcm").is_file()


def test_a_source_without_what_a_seg_copies_keeps_its_pngs_and_says_why(tiny_ckpt, tmp_path,
                                                                         capsys):  # fmt: skip
    """Each attribute a SEG copies from its source, missing in turn: the image is predicted (its
    row, mask and overlay), gets no SEG, and its row and one stderr line name the attribute."""
    from medmtl.cli import predict as cli
    from medmtl.inference.dicom_out import SEG_SOURCE_ATTRIBUTES

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(DICOM_DIR / US[0], src / "whole.dcm")
    for key in SEG_SOURCE_ATTRIBUTES:
        ds = pydicom.dcmread(DICOM_DIR / US[0])
        del ds[key]
        ds.save_as(src / f"no_{key}.dcm")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as done:
        cli.main([f"ckpt_path={tiny_ckpt}", f"input={src}", f"out={out}", "dicom_seg=true"])
    captured = capsys.readouterr()
    assert done.value.code == 1 and "Traceback" not in captured.err
    rows = {Path(r["file"]).name: r for r in _rows(out)}
    assert set(rows) == {"whole.dcm", *(f"no_{k}.dcm" for k in SEG_SOURCE_ATTRIBUTES)}
    assert rows["whole.dcm"]["seg_file"] and not rows["whole.dcm"]["seg_error"]
    failed = [ln for ln in captured.err.splitlines() if ln.strip().startswith("FAILED")]
    assert len(failed) == len(SEG_SOURCE_ATTRIBUTES), captured.err
    for key in SEG_SOURCE_ATTRIBUTES:
        name = f"no_{key}.dcm"
        row = rows[name]
        assert row["seg_file"] == "" and f"the file lacks {key}, which a SEG" in row["seg_error"]
        assert (out / row["mask_file"]).is_file() and (out / row["overlay_file"]).is_file()
        assert not list(out.glob(f"no_{key}_seg*")) and not list(out.glob(f"no_{key}_sr*"))
        assert any(name in ln and key in ln for ln in failed), (key, failed)
    assert f"({len(SEG_SOURCE_ATTRIBUTES)} without a DICOM SEG)" in captured.out

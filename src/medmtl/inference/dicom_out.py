"""DICOM outputs a PACS viewer opens: the lesion as a DICOM Segmentation (SEG) of its source
image, written with highdicom.

A SEG lies on its source image's own pixel grid, references it (study, series and SOP
instance; the frame predicted for a multi-frame source) and carries the source's patient and
study attributes, which an archive needs to file it with the study, and nothing else of it.
The model's answer for the image (class, probabilities, uncertainty, lesion area) is a DICOM
Structured Report beside it (TID 1500 measurement report, whose region is the SEG's lesion
segment), a JSON sidecar without patient data, and a line in the SEG's content description.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medmtl.errors import DataError
from medmtl.io.files import atomic_path, atomic_write_text, file_sha256
from medmtl.io.meta import ImageMeta

SERIES_NUMBER = 9901  # the SEG series, after the scanner's own series numbers
SR_SERIES_NUMBER = 9902
SEG_SUFFIX, SR_SUFFIX, RESULT_SUFFIX = "_seg.dcm", "_sr.dcm", "_result.json"
# medmtl's own codes (DICOM's private coding schemes start with 99): the class names and the
# numbers that have no standard code
SCHEME = "99MEDMTL"
UNITLESS = ("entropy", "unlike_score", "class_disagreement", "mask_agreement")


@dataclass(frozen=True)
class Algorithm:
    """Who made the segmentation: medmtl, its version and the model (its file's digest)."""

    name: str
    version: str
    model_id: str  # sha256 of the model file, first 16 hex digits
    model_file: str  # its name only (no folder)

    @classmethod
    def of_model(cls, path: str | Path, version: str) -> Algorithm:
        path = Path(path)
        return cls("medmtl", version, file_sha256(path)[:16], path.name)


@dataclass(frozen=True)
class DicomOutput:
    """``medmtl-predict dicom_seg=true``: what to write for every DICOM input."""

    algorithm: Algorithm
    seg_type: str = "binary"  # binary: the thresholded mask; fractional: the probability map


def read_source(path: Path) -> Any:
    """The source DICOM dataset, or one line naming the file."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:  # noqa: BLE001  (pydicom raises many types for a broken file)
        raise DataError(f"{path}: not a readable DICOM file ({exc}).") from exc
    if "PixelData" not in ds:
        raise DataError(f"{path}: a DICOM file without pixel data; there is nothing to segment.")
    return ds


# what a SEG and its SR copy from their source (its SOP, series, study and patient), measured:
# highdicom refuses a source that lacks any of them (Rows and Columns come with the pixels)
SEG_SOURCE_ATTRIBUTES = (
    "SOPClassUID", "SOPInstanceUID", "Modality", "SeriesInstanceUID", "StudyInstanceUID",
    "StudyID", "StudyDate", "StudyTime", "AccessionNumber", "PatientID", "PatientName",
    "PatientBirthDate", "PatientSex",
)  # fmt: skip


def check_seg_source(source: Any, path: Path) -> None:
    """One DataError line naming every attribute of :data:`SEG_SOURCE_ATTRIBUTES` the source
    lacks (a SEG is filed with its source's patient, study and series: none is made up)."""
    missing = [k for k in SEG_SOURCE_ATTRIBUTES if k not in source]
    if missing:
        raise DataError(
            f"{path}: no DICOM SEG written: the file lacks {', '.join(missing)}, which a SEG "
            "copies from its source; its PNG mask and overlay are written."
        )


def on_source_grid(values: np.ndarray, meta: ImageMeta, rows: int, columns: int) -> np.ndarray:
    """A map of the predicted image placed on the source's full grid (a cropped ultrasound
    region goes back where it was cut from; the rest is 0)."""
    if meta.cropped_to is None:
        if values.shape != (rows, columns):
            raise DataError(
                f"{meta.source}: the mask is {values.shape}, the image {rows}x{columns}."
            )
        return values
    x0, y0, x1, y1 = meta.cropped_to  # inclusive, as the ultrasound region gives them
    full = np.zeros((rows, columns), dtype=values.dtype)
    full[y0 : y1 + 1, x0 : x1 + 1] = values
    return full


def single_frame_view(ds: Any, frame: int) -> Any:
    """``ds`` as the one frame that was predicted: highdicom segments single frames of images
    without a frame of reference (ultrasound), so the SEG is made for this view and then
    points at the frame of the real source (:func:`refer_to_frame`)."""
    import copy

    from pydicom.uid import ExplicitVRLittleEndian

    view = copy.deepcopy(ds)
    frames = view.pixel_array
    view.PixelData = np.ascontiguousarray(frames[frame]).tobytes()
    view.NumberOfFrames = 1
    view.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for key in ("FrameIncrementPointer", "FrameTime", "FrameTimeVector"):
        if key in view:
            delattr(view, key)
    return view


def refer_to_frame(seg: Any, frame: int) -> None:
    """Every reference of ``seg`` to its source names the frame predicted (1-based)."""
    items = [
        ref for series in seg.ReferencedSeriesSequence for ref in series.ReferencedInstanceSequence
    ]
    for group in seg.PerFrameFunctionalGroupsSequence:
        for derivation in group.get("DerivationImageSequence", []):
            items += list(derivation.SourceImageSequence)
    items += list(seg.get("SourceImageSequence", []))
    for ref in items:
        ref.ReferencedFrameNumber = frame + 1


def lesion_seg(
    source: Any,
    mask: np.ndarray,
    probability: np.ndarray | None,
    meta: ImageMeta,
    output: DicomOutput,
    description: str,
    corrected: bool = False,
) -> Any:
    """The SEG of one image: segment 1, the lesion, on the source's grid. ``mask`` (binary)
    or ``probability`` (fractional, 0..1) are at the size of the predicted image.
    ``corrected``: the model's mask as a person corrected it (semi-automatic, not automatic)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    rows, columns = int(source.Rows), int(source.Columns)
    frames = int(source.get("NumberOfFrames", 1) or 1)
    frame = int(meta.frame or 0)
    fractional = output.seg_type == "fractional"
    values = probability if fractional else mask
    if values is None:
        raise DataError(f"{meta.source}: the model has no segmentation head; no SEG to write.")
    values = on_source_grid(values.astype(np.float32 if fractional else bool), meta, rows, columns)
    algo = output.algorithm
    identification = hd.AlgorithmIdentificationSequence(
        name=algo.name,
        version=algo.version,
        family=codes.cid7162.ArtificialIntelligence,
        parameters={"model": algo.model_file, "model_id": algo.model_id},
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=(
            hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
            if corrected
            else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        ),
        algorithm_identification=identification,
        tracking_uid=hd.UID(),
        tracking_id=f"lesion of {meta.source}"[:64],
    )
    view = single_frame_view(source, frame) if frames > 1 else source
    seg = hd.seg.Segmentation(
        source_images=[view],
        pixel_array=values,
        segmentation_type=(
            hd.seg.SegmentationTypeValues.FRACTIONAL
            if fractional
            else hd.seg.SegmentationTypeValues.BINARY
        ),
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medmtl",
        manufacturer_model_name=f"medmtl {algo.model_file}"[:64],
        software_versions=algo.version,
        device_serial_number=algo.model_id,
        content_description=description[:64],
        content_label="MEDMTL_LESION",
        series_description="medmtl lesion segmentation (research use)",
        fractional_type=(
            hd.seg.SegmentationFractionalTypeValues.PROBABILITY if fractional else None
        ),
        omit_empty_frames=False,
    )
    if frames > 1:
        refer_to_frame(seg, frame)
    return seg


def _code(value: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value[:16], SCHEME, meaning[:64])


def measurement_report(
    source: Any, seg: Any, row: dict[str, Any], meta: ImageMeta, output: DicomOutput
) -> Any:
    """The model's answer as a TID 1500 measurement report: one planar region (the SEG's
    lesion segment) with the lesion area, the class probabilities and the uncertainty
    measures, and the predicted class as a qualitative evaluation."""
    import highdicom as hd
    from highdicom.sr import (
        CodedConcept,
        Comprehensive3DSR,
        DeviceObserverIdentifyingAttributes,
        MeasurementReport,
        ObservationContext,
        ObserverContext,
        PlanarROIMeasurementsAndQualitativeEvaluations,
        QualitativeEvaluation,
        ReferencedSegmentationFrame,
        SourceImageForSegmentation,
        TrackingIdentifier,
    )
    from highdicom.sr import Measurement as SRMeasurement
    from pydicom.sr.codedict import codes

    frames = int(source.get("NumberOfFrames", 1) or 1)
    image = SourceImageForSegmentation(
        source.SOPClassUID,
        source.SOPInstanceUID,
        referenced_frame_numbers=[int(meta.frame or 0) + 1] if frames > 1 else None,
    )
    region = ReferencedSegmentationFrame(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        frame_number=1,
        segment_number=1,
        source_image=image,
    )
    measurements = []
    if row.get("lesion_area_mm2") not in (None, ""):
        area, unit = float(row["lesion_area_mm2"]), codes.UCUM.SquareMillimeter
    else:  # no pixel spacing in the file: the area in pixels
        area, unit = (
            float(row.get("lesion_area_px") or 0),
            CodedConcept("{pixels}", "UCUM", "pixels"),
        )
    measurements.append(SRMeasurement(name=codes.SCT.Area, value=area, unit=unit))
    for key, value in row.items():
        if value in (None, ""):
            continue
        if key.startswith("prob_"):
            name = _code(f"P_{key[5:]}", f"Probability of {key[5:]}")
        elif key in UNITLESS:
            name = _code(key, key.replace("_", " "))
        else:
            continue
        measurements.append(SRMeasurement(name=name, value=float(value), unit=codes.UCUM.NoUnits))
    evaluations = []
    if row.get("predicted_class"):
        cls = str(row["predicted_class"])
        evaluations.append(
            QualitativeEvaluation(name=_code("CLASS", "Predicted class"), value=_code(cls, cls))
        )
    algo = output.algorithm
    group = PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=hd.UID(), identifier="lesion"),
        referenced_segment=region,
        finding_type=codes.SCT.Lesion,
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
    )
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=algo.name, model_name=algo.model_file[:64],
            serial_number=algo.model_id,
        ),
    )  # fmt: skip
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.Ultrasonography,
        imaging_measurements=[group],
    )
    return Comprehensive3DSR(
        evidence=[source, seg],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medmtl",
        series_description="medmtl result (research use)",
        is_complete=True,
        is_final=False,  # a model's answer, not a signed report
        is_verified=False,
    )


def summary_text(row: dict[str, Any]) -> str:
    """The SEG's content description: the model's answer in a line (64 characters at most)."""
    parts = ["medmtl"]
    if row.get("predicted_class"):
        p = row.get(f"prob_{row['predicted_class']}")
        parts.append(f"{row['predicted_class']} {float(p):.2f}" if p is not None else "")
    if row.get("lesion_area_mm2") not in (None, ""):
        parts.append(f"lesion {float(row['lesion_area_mm2']):.1f} mm2")
    elif row.get("lesion_area_px") is not None:
        parts.append(f"lesion {int(row['lesion_area_px'])} px")
    return "; ".join(p for p in parts if p)[:64]


def write_dicom_outputs(
    stem: Path,
    out: Path,
    source_path: Path,
    mask: np.ndarray | None,
    probability: np.ndarray | None,
    meta: ImageMeta,
    output: DicomOutput,
    row: dict[str, Any],
) -> dict[str, str]:
    """Write ``<stem>_seg.dcm``, ``<stem>_sr.dcm`` and ``<stem>_result.json`` and return the
    row's new columns. Each file is written atomically, and only once all three are built: a
    failure leaves none of them (a :class:`DataError`: the source cannot have a SEG)."""
    source = read_source(source_path)
    check_seg_source(source, source_path)
    seg = lesion_seg(source, mask, probability, meta, output, summary_text(row))
    sr = measurement_report(source, seg, row, meta, output)
    seg_path = stem.with_name(stem.name + SEG_SUFFIX)
    sr_path = stem.with_name(stem.name + SR_SUFFIX)
    result_path = stem.with_name(stem.name + RESULT_SUFFIX)
    try:
        for dataset, path in ((seg, seg_path), (sr, sr_path)):
            with atomic_path(path) as tmp:
                dataset.save_as(str(tmp), enforce_file_format=True)
        _write_result(result_path, seg_path, sr_path, output, row)
    except BaseException:
        for path in (seg_path, sr_path, result_path):
            path.unlink(missing_ok=True)
        raise
    return {
        "seg_file": seg_path.relative_to(out).as_posix(),
        "seg_sop_instance_uid": str(seg.SOPInstanceUID),
        "sr_file": sr_path.relative_to(out).as_posix(),
        "result_file": result_path.relative_to(out).as_posix(),
    }


def _write_result(
    path: Path, seg_path: Path, sr_path: Path, output: DicomOutput, row: dict[str, Any]
) -> None:
    """The JSON sidecar: the model's answer and the DICOM files' names, no patient data."""
    result = {
        "seg_file": seg_path.name,
        "sr_file": sr_path.name,
        "algorithm": output.algorithm.__dict__,
        "segment": {"number": 1, "label": "lesion", "type": output.seg_type},
        # the model's answer; no patient data (that stays in the DICOM file)
        **{k: v for k, v in row.items() if k not in ("file", "mask_file", "overlay_file")},
    }
    atomic_write_text(path, json.dumps(result, indent=2, default=str) + "\n")

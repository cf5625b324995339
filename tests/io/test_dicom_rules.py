"""Every DICOM attribute the reader uses, validated where it is read: one DICOM per rule of
docs/preprocessing.md ("DICOM attributes and their rules")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medmtl.errors import DataError
from medmtl.io.image import read_image
from tests.conftest import DICOM_DIR

CT, US = DICOM_DIR / "CT_small.dcm", DICOM_DIR / "US1_UNCR.dcm"


def _variant(src: Path, tmp_path: Path, **changes) -> Path:
    """A copy of ``src`` with attributes changed (None: removed), written as given even where
    the value breaks its VR: a broken file is what the reader must handle."""
    from pydicom import config

    ds = pydicom.dcmread(src)
    kept = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        for key, value in changes.items():
            if value is None:
                delattr(ds, key)
            elif (
                isinstance(value, str)
                and not value.replace("\\", "").replace(".", "").replace("-", "").isdigit()
            ):
                # a text where a number belongs: stored as text, as a broken writer would
                ds.add_new(pydicom.datadict.tag_for_keyword(key), "LO", value)
            else:
                setattr(ds, key, value)
        out = tmp_path / f"{src.stem}-{'-'.join(changes) or 'plain'}.dcm"
        ds.save_as(out)
    finally:
        config.settings.writing_validation_mode = kept
    return out


@pytest.mark.parametrize(
    "src, changes, message",
    [
        (CT, {"Rows": None}, "Rows is missing"),
        (CT, {"Columns": 0}, "Columns=0 is not a whole number of 1 or more"),
        (CT, {"NumberOfFrames": "two"}, "NumberOfFrames='two' is not a whole number"),
        (CT, {"NumberOfFrames": 0}, "NumberOfFrames='0' is not a whole number of 1 or more"),
        (CT, {"NumberOfFrames": 4}, "pixel data is damaged or inconsistent"),
        (CT, {"Rows": 64}, "the file is inconsistent"),
        (CT, {"PhotometricInterpretation": "CMYK"}, "'CMYK' is not supported (supported:"),
        (CT, {"BitsAllocated": 12}, "BitsAllocated=12, BitsStored=16 are not supported"),
        (CT, {"BitsStored": 20}, "BitsStored at most BitsAllocated"),
        (US, {"SamplesPerPixel": 1}, "SamplesPerPixel=1 does not fit PhotometricInterpretation"),
        (CT, {"RescaleSlope": "0"}, "RescaleSlope is 0"),
    ],
)
def test_an_attribute_outside_its_rule_is_one_line_naming_it(tmp_path, src, changes, message):
    path = _variant(src, tmp_path, **changes)
    with pytest.raises(DataError, match=__import__("re").escape(message)) as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_a_frame_beyond_the_file_is_an_error_also_for_one_frame(tmp_path):
    with pytest.raises(DataError, match=r"frame=3 but the file has 1 frame \(0\.\.0\)"):
        read_image(CT, frame=3)
    with pytest.raises(DataError, match="frame=-1"):
        read_image(CT, frame=-1)


@pytest.mark.parametrize("spacing", ["0\\0", "-0.2\\0.2", "0.2", "abc\\0.2", None])
def test_a_spacing_that_is_not_positive_means_area_unknown(tmp_path, spacing):
    path = _variant(CT, tmp_path, PixelSpacing=spacing)
    _, meta = read_image(path)
    assert meta.pixel_spacing_mm is None and meta.area_mm2(100) is None
    _, ok = read_image(CT)
    assert ok.pixel_spacing_mm is not None and ok.area_mm2(100) > 0


def test_a_zero_spacing_gives_an_empty_area_cell_in_predictions(tiny_ckpt, tmp_path):
    import csv

    from medmtl.settings.commands import PredictSettings
    from medmtl.workflows.predict import predict

    src = tmp_path / "in"
    src.mkdir()
    ds = pydicom.dcmread(US)
    ds.PixelSpacing = "0\\0"
    ds.save_as(src / "zero.dcm")
    out = tmp_path / "out"
    predict(PredictSettings(ckpt_path=str(tiny_ckpt), input=str(src), out=str(out)))
    (row,) = list(csv.DictReader((out / "predictions.csv").open()))
    assert row["lesion_area_mm2"] == "" and row["lesion_area_px"] != ""


def test_window_and_ultrasound_deltas_that_are_not_numbers_are_left_out(tmp_path):
    path = _variant(CT, tmp_path, WindowCenter="abc")
    _, meta = read_image(path)
    assert meta.window_center is None
    arr, _ = read_image(CT)
    assert np.isfinite(arr).all()


def test_an_ultrasound_region_past_the_edge_is_clipped_and_one_outside_left_out():
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from medmtl.io.dicom import us_image_regions

    def region(x0, y0, x1, y1):
        r = Dataset()
        r.RegionSpatialFormat = 1
        r.RegionLocationMinX0, r.RegionLocationMinY0 = x0, y0
        r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x1, y1
        r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = 3
        r.PhysicalDeltaX = r.PhysicalDeltaY = 0.01
        return r

    ds = Dataset()
    ds.SequenceOfUltrasoundRegions = Sequence(
        [region(10, 20, 640, 480), region(700, 0, 800, 10), region(5, 5, 2, 9)]
    )
    # rows 480, columns 640: the first reaches one past both edges, the second starts outside,
    # the third has x1 < x0
    assert us_image_regions(ds, (480, 640)) == [(10, 20, 639, 479, 0.1, 0.1)]

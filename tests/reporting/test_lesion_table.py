"""lesions_<split>.csv: one row per lesion, its size on the grid and the original, found or not."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pydicom
from PIL import Image

from medmtl.data.cache import load_case
from medmtl.data.index import Case
from medmtl.preprocess.pipeline import PreprocessSettings
from medmtl.reporting.per_image import LESION_TABLE, write_lesions
from tests.conftest import DICOM_DIR


def _rows(path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def test_each_lesion_has_a_row_with_its_sizes_and_whether_it_was_found(tmp_path):
    """A DICOM image with a 0.2 × 0.3 mm spacing and two lesions; the prediction finds one."""
    ds = pydicom.dcmread(DICOM_DIR / "US1_UNCR.dcm")
    ds.PixelSpacing = [0.2, 0.3]
    image = tmp_path / "scan.dcm"
    ds.save_as(image)
    rows, cols = int(ds.Rows), int(ds.Columns)
    mask = np.zeros((rows, cols), np.uint8)
    mask[40:120, 40:140] = 255  # 80 × 100 px: 480 mm², 2.6 % of 640 × 480
    mask[200:230, 300:330] = 255  # 30 × 30 px: 54 mm², 0.3 %
    Image.fromarray(mask).save(tmp_path / "scan_mask.png")
    case = Case("scan.dcm", image, (tmp_path / "scan_mask.png",), 1, "benign")
    cached = load_case(case, PreprocessSettings(image_size=64))
    assert cached.pixel_mm2 == 0.2 * 0.3
    np.testing.assert_allclose(cached.lesion_area_px, [8000, 900])
    np.testing.assert_allclose(cached.lesion_area_mm2(1), 480.0)
    assert np.isnan(cached.lesion_area_mm2(3))
    pred = cached.lesions == 1  # the large lesion found exactly, the small one missed
    samples = {
        "index": np.array([0]),
        "image": cached.image[None, None],
        "mask": cached.mask[None, None],
        "pred_mask": pred[None, None],
        "lesions": cached.lesions[None, None],
    }
    out = write_lesions(tmp_path / "lesions_test.csv", ["scan.dcm"], samples, [cached])
    got = _rows(out)
    assert list(got[0]) == list(LESION_TABLE)
    assert [(r["lesion"], r["found"]) for r in got] == [("1", "1"), ("2", "0")]
    assert float(got[0]["area_px"]) == 8000 and float(got[0]["area_mm2"]) == 480.0
    assert float(got[1]["area_mm2"]) == 54.0
    assert float(got[0]["iou"]) == 1.0 and float(got[1]["dice"]) == 0.0
    grid = int(got[0]["grid_area_px"])
    assert grid == (cached.lesions == 1).sum()
    assert float(got[0]["grid_share"]) == grid / 64**2
    assert (rows, cols) == (480, 640)
    assert got[0]["size"] == "medium" and got[1]["size"] == "small"


def test_an_image_without_spacing_has_an_empty_mm2_cell(tmp_path):
    image = np.full((50, 60), 90, np.uint8)
    mask = np.zeros((50, 60), np.uint8)
    mask[10:30, 10:30] = 255
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(mask).save(tmp_path / "a_mask.png")
    cached = load_case(
        Case("a.png", tmp_path / "a.png", (tmp_path / "a_mask.png",), 1, "benign"),
        PreprocessSettings(image_size=32),
    )
    samples = {
        "index": np.array([0]),
        "image": cached.image[None, None],
        "mask": cached.mask[None, None],
        "pred_mask": np.zeros((1, 1, 32, 32), bool),
        "lesions": cached.lesions[None, None],
    }
    (row,) = _rows(write_lesions(tmp_path / "l.csv", ["a.png"], samples, [cached]))
    assert row["area_mm2"] == "" and float(row["area_px"]) == 400 and row["found"] == "0"


def test_a_run_writes_one_row_per_counted_lesion(tiny_run):
    """The table and the predictions' per-image counts describe the same lesions."""
    per_image = _rows(tiny_run / "predictions_test.csv")
    lesions = _rows(tiny_run / "lesions_test.csv")
    counted = {r["id"]: int(float(r["lesions"])) for r in per_image}
    found = {r["id"]: int(float(r["lesions_found"])) for r in per_image}
    assert sum(counted.values()) > 0
    assert Counter(r["id"] for r in lesions) == +Counter(counted)
    got = Counter()
    for r in lesions:
        got[r["id"]] += int(r["found"])
    assert {k: got[k] for k in found} == found
    assert all(float(r["area_px"]) >= 1 and r["area_mm2"] == "" for r in lesions)

"""Correcting a result and saving it as a site case (medmtl-serve site_dir=): the API, the
site folder (a manifest medmtl-adapt reads, mask PNGs, a DICOM SEG for a DICOM), deleting, the
refusals, and the round trip in a real headless browser."""

from __future__ import annotations

import csv
import io
import json
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medmtl.bench.serve import running_server
from medmtl.workflows.serve import ServeSettings, create_app
from tests.conftest import DICOM_DIR
from tests.workflows.test_serve import _browser, _decode, _page_result, open_page


def _png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


def _save(client, path: Path, mask: np.ndarray, label: str, name: str | None = None, **form):
    return client.post(
        "/api/cases",
        files={
            "file": (name or path.name, path.read_bytes(), "application/octet-stream"),
            "mask": ("mask.png", _png(mask), "image/png"),
        },
        data={"label": label, **form},
    )


def _two_lesions(shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    h, w = shape
    mask[h // 5 : h // 5 + 20, w // 5 : w // 5 + 30] = True
    mask[h // 2 : h // 2 + 25, w // 2 : w // 2 + 15] = True
    return mask


@pytest.fixture
def site(tiny_ckpt, tmp_path) -> tuple[TestClient, Path]:
    folder = tmp_path / "site"
    return TestClient(create_app(ServeSettings(model=str(tiny_ckpt), site_dir=str(folder)))), folder


def test_saved_cases_make_a_manifest_medmtl_adapt_reads(site, busi, tmp_path, cache_dir):
    from medmtl.data.build import datamodule_from_config

    client, folder = site
    assert client.get("/api/model").json()["site_cases"] is True
    assert client.get("/api/cases").json() == {"cases": []}
    benign = busi / "benign" / "benign (1).png"
    normal = busi / "normal" / "normal (1).png"
    shape = np.asarray(Image.open(benign)).shape[:2]
    res = _save(client, benign, _two_lesions(shape), "benign", group="patient-7")
    assert res.status_code == 201, res.text
    saved = res.json()
    assert saved["label"] == "benign" and saved["replaced"] is False and saved["seg"] is False
    assert saved["lesion_px"] == int(_two_lesions(shape).sum()) and saved["group"] == "patient-7"
    normal_shape = np.asarray(Image.open(normal)).shape[:2]
    assert _save(client, normal, np.zeros(normal_shape, bool), "normal").status_code == 201
    case = folder / "cases" / saved["case"]
    assert (case / "image.png").read_bytes() == benign.read_bytes()  # the upload, as it was
    on_disk = np.asarray(Image.open(case / "mask.png")) > 0
    assert (on_disk == _two_lesions(shape)).all()
    listed = client.get("/api/cases").json()["cases"]
    assert [c["label"] for c in listed] == ["benign", "normal"]
    # the site folder is a manifest medmtl reads, as medmtl-adapt will
    dm = datamodule_from_config({
        "source": "manifest", "name": "site", "manifest": str(folder / "cases.csv"),
        "classes": ["normal", "benign"], "image_size": 64, "cache_dir": str(cache_dir),
        "split_file": str(tmp_path / "split.json"),
    })  # fmt: skip
    dm.load()
    assert sorted(c.class_name for c in dm.cases("all")) == ["benign", "normal"]
    assert {c.group for c in dm.cases("all")} == {"patient-7", listed[1]["case"]}
    # the same image saved again replaces its correction (one case, the new mask)
    smaller = np.zeros(shape, bool)
    smaller[10:20, 10:20] = True
    again = _save(client, benign, smaller, "malignant").json()
    assert again["case"] == saved["case"] and again["replaced"] is True
    assert (np.asarray(Image.open(case / "mask.png")) > 0).sum() == 100
    with (folder / "cases.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == ["normal", "malignant"]
    assert not [p for p in (folder / "cases").iterdir() if p.name.startswith(".")]
    # review: the image as the page shows it and the mask
    shown = client.get(f"/api/cases/{saved['case']}").json()
    assert (_decode(shown["mask_png"]) > 0).sum() == 100
    assert _decode(shown["image_png"]).shape[:2] == shape


def test_deleting_a_case_removes_its_files_and_its_row(site, busi):
    client, folder = site
    benign = busi / "benign" / "benign (2).png"
    shape = np.asarray(Image.open(benign)).shape[:2]
    case = _save(client, benign, _two_lesions(shape), "benign").json()["case"]
    assert (folder / "cases" / case).is_dir()
    res = client.delete(f"/api/cases/{case}")
    assert res.status_code == 200 and res.json()["deleted"]["case"] == case
    assert not (folder / "cases" / case).exists()
    assert client.get("/api/cases").json() == {"cases": []}
    assert (folder / "cases.csv").read_text().strip() == ",".join(
        ["image", "mask", "label", "group", "case", "uploaded_as", "seg", "lesion_px", "saved"]
    )
    assert client.delete(f"/api/cases/{case}").status_code == 404
    assert client.get("/api/cases/..%2F..%2Fetc").status_code == 404


@pytest.mark.parametrize(
    ("label", "mask", "says"),
    [
        ("benign", "wrong_size", "the mask is 10 x 10 pixels, the image"),
        ("normal", "lesions", "a normal case has no lesion, but 2 lesion(s) are drawn"),
        ("benign", "empty", "a benign case needs its lesion drawn"),
        ("cyst", "lesions", "class 'cyst' is not one of the model's"),
    ],
)
def test_a_bad_case_is_refused_in_one_line_and_nothing_is_written(site, busi, label, mask, says):
    client, folder = site
    image = busi / "benign" / "benign (3).png"
    shape = np.asarray(Image.open(image)).shape[:2]
    drawn = {
        "wrong_size": np.ones((10, 10), bool),
        "lesions": _two_lesions(shape),
        "empty": np.zeros(shape, bool),
    }[mask]
    res = _save(client, image, drawn, label, name="scan.png")
    assert res.status_code == 400
    detail = res.json()["detail"]
    assert detail.startswith("scan.png: ") and says in detail and "\n" not in detail
    assert not (folder / "cases").exists() and not (folder / "cases.csv").exists()


def test_without_a_site_folder_correcting_is_off(client_without_site):
    assert client_without_site.get("/api/model").json()["site_cases"] is False
    res = client_without_site.get("/api/cases")
    assert res.status_code == 400 and "site_dir=" in res.json()["detail"]


@pytest.fixture
def client_without_site(tiny_ckpt) -> TestClient:
    return TestClient(create_app(ServeSettings(model=str(tiny_ckpt))))


def test_a_dicom_case_gets_a_seg_that_references_it(site, tmp_path):
    import highdicom as hd

    client, folder = site
    ds = pydicom.dcmread(DICOM_DIR / "US1_UNCR.dcm")
    ds.PatientID = "PID-12345-XYZ"
    path = tmp_path / "scan.dcm"
    ds.save_as(path)
    mask = _two_lesions((int(ds.Rows), int(ds.Columns)))
    res = _save(client, path, mask, "malignant")
    assert res.status_code == 201, res.text
    saved = res.json()
    assert saved["seg"] is True and saved["group"].startswith("patient-")
    assert "PID-12345-XYZ" not in (folder / "cases.csv").read_text()  # a pseudonym
    case = folder / "cases" / saved["case"]
    assert (case / "image.dcm").read_bytes() == path.read_bytes()
    seg = hd.seg.segread(case / "seg.dcm")
    assert seg.StudyInstanceUID == ds.StudyInstanceUID
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert referenced.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    description = seg.SegmentSequence[0]
    assert description.SegmentAlgorithmType == "SEMIAUTOMATIC"
    stored = np.asarray(seg.pixel_array).reshape(-1, *mask.shape)[0] > 0
    assert (stored == mask).all()


# -- the round trip in a real browser ------------------------------------------------------
@pytest.fixture
def site_server(tiny_ckpt, tmp_path):
    folder = tmp_path / "site"
    with running_server(tiny_ckpt, tmp_path / "server.log", options=[f"site_dir={folder}"]) as (
        url,
        _,
    ):
        yield url, folder


def _stroke(browser, canvas, points: list[tuple[float, float]]) -> None:
    """Drag the mouse along ``points`` (fractions of the canvas's shown size)."""
    from selenium.webdriver.common.action_chains import ActionChains

    size = canvas.size
    chain = ActionChains(browser)

    def offset(point):  # from the canvas's centre, in CSS pixels
        return int((point[0] - 0.5) * size["width"]), int((point[1] - 0.5) * size["height"])

    chain.move_to_element_with_offset(canvas, *offset(points[0])).click_and_hold()
    for point in points[1:]:
        chain.move_to_element_with_offset(canvas, *offset(point))
    chain.release().perform()


def test_correcting_a_result_in_a_real_browser(site_server, busi, tmp_path):
    """Draw two lesions, erase part of one, set the class, save; reload the page: the case is
    listed and reviewed as saved; the files on disk are the drawing; delete removes them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    server, folder = site_server
    image = tmp_path / "scan.png"
    image.write_bytes((busi / "benign" / "benign (4).png").read_bytes())
    h, w = np.asarray(Image.open(image)).shape[:2]
    browser = _browser()
    try:
        result = _page_result(browser, server, image)
        result.find_element(By.CSS_SELECTOR, ".correct-start").click()
        assert result.get_attribute("data-correcting") == "true"
        result.find_element(By.CSS_SELECTOR, ".clear-mask").click()
        assert result.get_attribute("data-area") == "0"
        canvas = result.find_element(By.CSS_SELECTOR, "canvas.overlay")
        _stroke(browser, canvas, [(0.2, 0.3), (0.4, 0.3)])  # lesion one
        _stroke(browser, canvas, [(0.7, 0.7), (0.8, 0.75)])  # lesion two
        drawn = int(result.get_attribute("data-area"))
        assert drawn > 0
        result.find_element(By.CSS_SELECTOR, '.tool[data-tool="erase"]').click()
        _stroke(browser, canvas, [(0.35, 0.2), (0.35, 0.4)])  # cut across lesion one
        erased = int(result.get_attribute("data-area"))
        assert 0 < erased < drawn
        Select(result.find_element(By.CSS_SELECTOR, ".correct-class")).select_by_value("malignant")
        result.find_element(By.CSS_SELECTOR, ".correct-save").click()
        WebDriverWait(browser, 30).until(
            lambda b: (
                "Saved as case" in result.find_element(By.CSS_SELECTOR, ".correct-status").text
            )
        )
        case = result.get_attribute("data-saved-case")
        # the files on disk are what was drawn: two lesions (one cut in two), the class chosen
        mask = np.asarray(Image.open(folder / "cases" / case / "mask.png")) > 0
        assert mask.shape == (h, w) and int(mask.sum()) == erased
        from medmtl.workflows.site_cases import lesion_count

        assert lesion_count(mask) == 3
        assert not mask[int(0.3 * h), int(0.35 * w)] and mask[int(0.3 * h), int(0.25 * w)]
        with (folder / "cases.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        assert [(r["case"], r["label"], r["uploaded_as"]) for r in rows] == [
            (case, "malignant", "scan.png")
        ]
        # reload: the saved case is listed and its review shows the saved mask
        open_page(browser, server)
        row = WebDriverWait(browser, 30).until(
            lambda b: b.find_element(By.CSS_SELECTOR, f'#site-table tr[data-case="{case}"]')
        )
        assert row.get_attribute("data-label") == "malignant"
        row.find_element(By.CSS_SELECTOR, "button.review").click()
        review = browser.find_element(By.ID, "site-review")
        WebDriverWait(browser, 30).until(lambda b: review.get_attribute("data-case") == case)
        assert int(review.get_attribute("data-area")) == erased
        # delete: two clicks, then the files and the row are gone
        row.find_element(By.CSS_SELECTOR, "button.delete").click()
        assert (folder / "cases" / case).exists()
        row.find_element(By.CSS_SELECTOR, "button.delete").click()
        WebDriverWait(browser, 30).until(
            lambda b: not b.find_elements(By.CSS_SELECTOR, f'#site-table tr[data-case="{case}"]')
        )
        assert not (folder / "cases" / case).exists()
        with urllib.request.urlopen(f"{server}/api/cases", timeout=30) as r:
            assert json.loads(r.read()) == {"cases": []}
    finally:
        browser.quit()


def test_a_dicom_that_cannot_have_a_seg_is_saved_without_one(site, tmp_path):
    """The correction is what adapting needs: kept, with the reason there is no SEG."""
    client, folder = site
    ds = pydicom.dcmread(DICOM_DIR / "US1_UNCR.dcm")
    for key in ("StudyID", "AccessionNumber"):
        if key in ds:
            delattr(ds, key)
    path = tmp_path / "bare.dcm"
    ds.save_as(path)
    res = _save(client, path, _two_lesions((int(ds.Rows), int(ds.Columns))), "benign")
    assert res.status_code == 201, res.text
    saved = res.json()
    assert saved["seg"] is False and "StudyID" in saved["seg_error"]
    case = folder / "cases" / saved["case"]
    assert (case / "mask.png").is_file() and not (case / "seg.dcm").exists()
    assert "seg_error" not in (folder / "cases.csv").read_text()

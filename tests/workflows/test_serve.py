"""medmtl-serve: the JSON API (FastAPI's test client), a real server over HTTP, the page in a
real headless browser."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medmtl.bench.serve import multipart, running_server
from medmtl.errors import ConfigError
from medmtl.workflows.serve import PAGE, ServeSettings, create_app, find_demo_model
from tests.conftest import DICOM_DIR

PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-12345-XYZ",
    "PatientBirthDate": "19700101",
    "InstitutionName": "St Example Hospital",
    "AccessionNumber": "ACC-98765",
}
NEEDLES = [*PHI.values(), "Doe", "Jane", "Example Hospital"]


def _decode(data_url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


@pytest.fixture(scope="module")
def client(tiny_ckpt) -> TestClient:
    return TestClient(create_app(ServeSettings(model=str(tiny_ckpt))))


@pytest.fixture
def image(busi) -> Path:
    return busi / "benign" / "benign (1).png"


def _post(
    client, path: Path | None = None, name: str | None = None, data: bytes | None = None, **form
):
    content = data if data is not None else path.read_bytes()
    return client.post(
        "/api/predict",
        files={"file": (name or path.name, content, "application/octet-stream")},
        data={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in form.items()},
    )


def test_health_and_model_card(client, tiny_ckpt, tiny_run, onnx_model):
    assert client.get("/api/health").json() == {
        "status": "ok",
        "model": tiny_ckpt.name,
        "auth": False,
    }
    card = client.get("/api/model").json()
    assert card["classes"] == ["normal", "benign", "malignant"] and card["input_size"] == 64
    assert card["backend"] == "pytorch" and card["gradcam"] is True
    assert card["preprocessing"]["image_size"] == 64 and "normalize" in card["preprocessing"]
    run = json.loads((tiny_run / "metrics.json").read_text())
    assert card["trained_on"] == "phantom"
    assert card["test_metrics"]["cls_acc"] == run["test/cls_acc"]
    assert card["test_metrics"]["seg_dice_lesion"] == run["test/seg_dice_lesion"]
    # an exported model carries the same card in its metadata
    onnx_card = (
        TestClient(create_app(ServeSettings(model=str(onnx_model)))).get("/api/model").json()
    )
    assert onnx_card["backend"] == "onnxruntime" and onnx_card["gradcam"] is False
    assert (
        onnx_card["test_metrics"] == card["test_metrics"] and onnx_card["trained_on"] == "phantom"
    )
    # the card lists the calibration the model carries (fitted on validation after training)
    assert card["calibration"]["temperature"] == pytest.approx(run["calibration/temperature"])
    assert onnx_card["calibration"] == card["calibration"]
    # ... and the thresholds: the answer sets' error rate, the unlike-training threshold
    assert card["conformal"] == {**onnx_card["conformal"], "fitted": True, "alpha": 0.1}
    assert card["unlike"]["threshold"] == pytest.approx(run["unlike/threshold"])
    assert onnx_card["unlike"] == card["unlike"]
    # ... the gate and the mask threshold the masks are made with, and the refer rule
    assert card["gate"] == {"empty_mask_class": None, "empty_mask_min_prob": 0.0,
                            "empty_mask_keep_above": None, "mask_threshold": 0.5}  # fmt: skip
    assert onnx_card["gate"] == card["gate"]
    assert card["refer"] == onnx_card["refer"] == {"min_mask_agreement": None}


def test_a_good_image(client, image, tiny_ckpt, tmp_path):
    res = _post(client, image)
    assert res.status_code == 200, res.text
    out = res.json()
    h, w = np.asarray(Image.open(image).convert("L")).shape
    assert (out["width"], out["height"]) == (w, h) and out["file"] == image.name
    probs = out["probabilities"]
    assert set(probs) == set(out["classes"]) and sum(probs.values()) == pytest.approx(1, abs=1e-5)
    assert out["predicted_class"] == max(probs, key=probs.get)
    mask = _decode(out["mask_png"]) > 0
    prob8 = _decode(out["probability_png"])
    assert mask.shape == prob8.shape == (h, w)
    assert out["lesion_area_px"] == int(mask.sum()) and out["lesion_area_mm2"] is None
    assert np.array_equal(mask, prob8 >= 128)  # the rule the page re-thresholds with
    higher = _post(client, image, threshold=0.8).json()
    assert higher["lesion_area_px"] == int((prob8 >= 204).sum()) <= out["lesion_area_px"]
    # the same image through medmtl-predict: the same class and probabilities
    from medmtl.workflows.predict import predict

    opts = {
        "ckpt_path": str(tiny_ckpt),
        "model": None,
        "backend": "torch",
        "input": str(image),
        "out": str(tmp_path / "p"),
        "tta": False,
        "explain": None,
        "batch_size": 1,
        "threshold": 0.5,
        "frame": 0,
        "threads": 0,
        "image_column": "image",
    }
    row = predict(opts).rows[0]
    assert row["predicted_class"] == out["predicted_class"]
    for c in out["classes"]:
        assert row[f"prob_{c}"] == pytest.approx(probs[c], abs=1e-5)
    assert out["entropy"] == pytest.approx(row["entropy"], abs=1e-5)
    assert 0 <= out["entropy"] <= 1
    # the answer set, the unlike-training score and refer: the same as medmtl-predict's
    assert out["answer_set"] == row["answer_set"].split("|") and out["answer_set"]
    assert set(out["answer_set"]) <= set(out["classes"])
    assert out["unlike_score"] == pytest.approx(row["unlike_score"], abs=1e-5)
    assert out["unlike_training"] is bool(row["unlike_training"])
    assert out["refer"] is bool(row["refer"])
    assert out["refer"] is (out["unlike_training"] or len(out["answer_set"]) != 1)
    # a model trained on the phantom says that a real BUSI scan is unlike its training data
    assert out["unlike_training"] is True and out["refer"] is True


def test_gradcam_on_pytorch_and_refused_on_onnx(client, image, onnx_model):
    cam = _decode(_post(client, image, gradcam=True).json()["gradcam_png"])
    assert cam.ndim == 3 and cam.shape[:2] == np.asarray(Image.open(image)).shape[:2]
    onnx = TestClient(create_app(ServeSettings(model=str(onnx_model))))
    res = _post(onnx, image, gradcam=True)
    assert res.status_code == 400 and "gradcam needs a checkpoint" in res.json()["detail"]


def test_dicom_with_pixel_spacing_and_no_patient_data(client, tmp_path, caplog, monkeypatch):
    ds = pydicom.dcmread(DICOM_DIR / "US1_UNCR.dcm")
    for key, value in PHI.items():
        setattr(ds, key, value)
    ds.PixelSpacing = [0.1, 0.2]
    path = tmp_path / "scan.dcm"
    ds.save_as(path)
    uploads = tmp_path / "tmp"
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))
    with caplog.at_level(logging.DEBUG):
        res = _post(client, path)
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["pixel_spacing_mm"] == [0.1, 0.2]
    assert out["lesion_area_mm2"] == pytest.approx(out["lesion_area_px"] * 0.02, abs=1e-3)
    # the response's words (its PNGs are base64 noise, in which any 3 letters can occur) and
    # the log hold nothing of the header
    words = json.dumps({k: v for k, v in out.items() if not str(v).startswith("data:")})
    assert not [n for n in NEEDLES if n in words + caplog.text]
    for key in ("image_png", "mask_png", "probability_png"):  # no text chunks in the PNGs
        assert not Image.open(io.BytesIO(base64.b64decode(out[key].split(",", 1)[1]))).text
    assert list(uploads.iterdir()) == []  # the upload's temporary folder is gone


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("notes.png", b"just some text, not an image", "notes.png: cannot be decoded as an image"),
        ("notes.dcm", b"just some text named like a DICOM file", "notes.dcm: not a DICOM file"),
        ("empty.png", b"", "empty.png: the file is empty"),
        ("cut.png", "truncated", "cut.png: cannot be decoded as an image"),
    ],
)
def test_bad_uploads_are_one_line_400_and_the_server_goes_on(client, image, name, content, says):
    data = image.read_bytes()[:3000] if content == "truncated" else content
    res = _post(client, name=name, data=data)
    assert res.status_code == 400
    detail = res.json()["detail"]
    assert detail.startswith(says) and "\n" not in detail and "medmtl-upload" not in detail
    assert _post(client, image).status_code == 200  # and the next request is served


def test_upload_size_limit(tiny_ckpt, image):
    small = TestClient(create_app(ServeSettings(model=str(tiny_ckpt), max_upload_mb=0.05)))
    big = image.read_bytes() * 2
    assert len(big) > 0.05 * 2**20
    res = _post(small, image, data=big)
    assert res.status_code == 413 and "larger than the limit of 0.05 MB" in res.json()["detail"]

    def chunks():  # no Content-Length: counted as it arrives
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(20):
            yield b"\0" * 10_000

    res = small.post(
        "/api/predict",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert res.status_code == 413
    # a file under the limit is still served
    little = io.BytesIO()
    Image.open(image).convert("L").resize((128, 96)).save(little, format="PNG")
    assert len(little.getvalue()) < 0.05 * 2**20
    assert _post(small, name="little.png", data=little.getvalue()).status_code == 200


def test_token_when_asked_for(tiny_ckpt, image):
    guarded = TestClient(create_app(ServeSettings(model=str(tiny_ckpt), auth_token="s3cret")))
    assert guarded.get("/api/health").status_code == 200
    assert guarded.get("/api/model").status_code == 401
    assert _post(guarded, image).status_code == 401
    ok = guarded.get("/api/model", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200


def test_page_and_docs_load_nothing_from_elsewhere(client):
    for f in PAGE.iterdir():
        text = f.read_text()
        assert "http://" not in text and "https://" not in text, f.name
    assert client.get("/").status_code == 200 and "research tool" in client.get("/").text.lower()
    docs = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]


def test_demo_model_is_found_or_named(tmp_path):
    with pytest.raises(ConfigError, match="no `make demo` run found"):
        find_demo_model(tmp_path)
    run = tmp_path / "train" / "2026-01-01_00-00-00"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    (run / "config_resolved.yaml").write_text("tags:\n- demo\n- phantom\n")
    (run / "checkpoints" / "epoch011-overall0.9.ckpt").write_bytes(b"")
    assert find_demo_model(tmp_path).name == "epoch011-overall0.9.ckpt"


# -- a real server --------------------------------------------------------------------------
@pytest.fixture
def server(tiny_ckpt, tmp_path):
    with running_server(tiny_ckpt, tmp_path / "server.log") as (url, _):
        yield url


def test_a_real_server_over_http(server, image):
    body, kind = multipart(image)
    request = urllib.request.Request(
        f"{server}/api/predict", data=body, headers={"Content-Type": kind}
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        out = json.loads(r.read())
    assert r.status == 200 and out["predicted_class"] in out["classes"]
    with urllib.request.urlopen(f"{server}/", timeout=10) as r:
        assert b"research tool" in r.read().lower()


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(
                "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
            )
        pytest.skip("no chromium/chromedriver (REQUIRE_BROWSER=1 makes this a failure)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--window-size=1280,1600",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def _api_predict(server: str, path: Path) -> dict:
    body, kind = multipart(path)
    request = urllib.request.Request(
        f"{server}/api/predict", data=body, headers={"Content-Type": kind}
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        return json.loads(r.read())


def open_page(browser, server: str) -> None:
    """Open the page and wait until it has read the model card and is ready."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server}/")
    WebDriverWait(browser, 30).until(
        lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true"
    )


def _page_result(browser, server: str, path: Path):
    """Open the page, drop ``path`` on it and return its finished result element."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, server)
    browser.find_element(By.ID, "files").send_keys(str(path.resolve()))
    result = browser.find_element(By.CSS_SELECTOR, ".result")
    WebDriverWait(browser, 120).until(
        lambda b: result.get_attribute("data-state") in ("done", "error")
    )
    assert result.get_attribute("data-state") == "done", result.text
    return result


def test_the_page_warns_on_a_foreign_image_in_a_real_browser(server, tmp_path):
    """Noise is unlike any training scan: the API says so and the page shows the warning."""
    from selenium.webdriver.common.by import By

    noise = tmp_path / "noise.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((140, 180)) * 255).astype(np.uint8)).save(noise)
    api = _api_predict(server, noise)
    assert api["unlike_training"] is True and api["unlike_score"] > 1 and api["refer"] is True
    browser = _browser()
    try:
        result = _page_result(browser, server, noise)
        assert "warns on scans unlike its training data" in browser.find_element(By.ID, "card").text
        warning = result.find_element(By.CSS_SELECTOR, ".warning.unlike")
        assert warning.is_displayed() and "Unlike the training data" in warning.text
        referred = result.find_element(By.CSS_SELECTOR, ".warning.refer")
        assert referred.is_displayed() and "unlike the training data" in referred.text
        # the page says every reason the API gives (medmtl.metrics.refer_reasons), in its words
        assert "the scan is unlike the training data" in api["refer_reasons"]
        assert all(reason in referred.text for reason in api["refer_reasons"])
        assert result.get_attribute("data-unlike") == "true"
        shown = result.find_element(By.CSS_SELECTOR, ".answer-set").text
        expected = " or ".join(api["answer_set"]) or "none of the classes"
        assert shown == expected, (shown, api["answer_set"])
    finally:
        browser.quit()


def test_the_page_in_a_real_browser(server, image, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    api = _api_predict(server, image)
    browser = _browser()
    try:
        result = _page_result(browser, server, image)
        assert "not a diagnosis" in browser.find_element(By.ID, "note").text
        # the class shown is the API's, the bars are its probabilities, the mask its mask
        assert (
            result.find_element(By.CSS_SELECTOR, ".predicted-class").text == api["predicted_class"]
        )
        bars = {
            b.get_attribute("data-class"): float(b.get_attribute("data-probability"))
            for b in result.find_elements(By.CSS_SELECTOR, ".bar")
        }
        assert bars == pytest.approx(api["probabilities"])
        assert int(result.get_attribute("data-area")) == api["lesion_area_px"]
        canvas = "return document.querySelector('.result canvas.overlay').toDataURL()"
        before = browser.execute_script(canvas)
        # move the slider: the mask is re-thresholded in the page, without a request
        browser.execute_script(
            "const s = document.getElementById('threshold'); s.value = '0.85';"
            "s.dispatchEvent(new Event('input'));"
        )
        WebDriverWait(browser, 10).until(
            lambda b: result.get_attribute("data-area") != str(api["lesion_area_px"])
        )
        assert browser.execute_script(canvas) != before
        prob8 = _decode(api["probability_png"])
        assert int(result.get_attribute("data-area")) == int((prob8 >= 217).sum())
        browser.save_screenshot(str(tmp_path / "page.png"))
        assert (tmp_path / "page.png").stat().st_size > 10_000
    finally:
        browser.quit()


def test_the_page_shows_the_shift_of_recent_uploads_in_a_real_browser(server, busi, tmp_path):
    """Ten BUSI scans dropped on the page of a phantom model: the page says, above the
    results, that together they differ from its training data; "Start anew" forgets them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    files = []
    for cls in ("benign", "malignant", "normal"):
        for k in range(1, 5):
            files.append(tmp_path / f"{cls}_{k}.png")
            shutil.copy(busi / cls / f"{cls} ({k}).png", files[-1])
    files = [f for f in files if f.name != "malignant_4.png"][:10]  # a near copy of (3)
    browser = _browser()
    try:
        open_page(browser, server)
        shift = browser.find_element(By.ID, "shift")
        assert shift.is_displayed() and "0 of the 10 distinct images" in shift.text
        browser.find_element(By.ID, "files").send_keys("\n".join(str(f) for f in files))
        WebDriverWait(browser, 300).until(
            lambda b: (
                b.find_element(By.ID, "progress-text").text == "10 image(s) done"
                and shift.get_attribute("data-shifted") == "true"
            )
        )
        assert "Recent uploads: shift test of 10 image(s): unlike the training" in shift.text
        assert browser.find_element(By.ID, "shift-advice").is_displayed()
        # which to label first: the page lists the API's order of the same uploads
        with urllib.request.urlopen(f"{server}/api/label_order", timeout=30) as r:
            order = [item["file"] for item in json.load(r)["order"]]
        WebDriverWait(browser, 30).until(
            lambda b: len(b.find_elements(By.CSS_SELECTOR, "#label-order-list li")) == 10
        )
        listed = browser.find_elements(By.CSS_SELECTOR, "#label-order-list li")
        assert [li.get_attribute("data-file") for li in listed] == order
        assert sorted(order) == sorted(f.name for f in files)
        assert browser.find_element(By.ID, "label-order").is_displayed()
        browser.find_element(By.ID, "shift-reset").click()
        WebDriverWait(browser, 30).until(lambda b: "0 of the 10 distinct images" in shift.text)
        assert shift.get_attribute("data-shifted") == "false"
        assert not browser.find_element(By.ID, "shift-advice").is_displayed()
        WebDriverWait(browser, 30).until(
            lambda b: not b.find_element(By.ID, "label-order").is_displayed()
        )
    finally:
        browser.quit()

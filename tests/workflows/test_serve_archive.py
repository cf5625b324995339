"""medmtl-serve archive=...: the page predicts a study of the archive by its UID and can store
the segmentations and reports back (Debian's Orthanc on localhost)."""

from __future__ import annotations

import os

import pydicom
import pytest
from fastapi.testclient import TestClient

from medmtl.bench.serve import running_server
from medmtl.settings.commands import ServeSettings
from medmtl.workflows.serve import create_app
from tests.archive import PASSWORD, USER, orthanc
from tests.conftest import DICOM_DIR
from tests.io.test_dicomweb import _in_study
from tests.workflows.test_serve import _browser, open_page

US1 = DICOM_DIR / "US1_UNCR.dcm"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    folder = tmp_path_factory.mktemp("orthanc")
    study = pydicom.dcmread(US1)
    ct = _in_study(DICOM_DIR / "CT_small.dcm", study, folder / "ct.dcm")
    with orthanc(folder / "server") as server:
        for f in (US1, ct):
            server.upload(f)
        yield server, study


def _series(server, study) -> list[str]:
    found = server.rest("GET", f"/dicom-web/studies/{study.StudyInstanceUID}/series").json()
    return sorted(s["00080060"]["Value"][0] for s in found)


def test_the_api_predicts_a_study_and_stores_its_results(archive, tiny_ckpt, monkeypatch):
    server, study = archive
    monkeypatch.setenv("DICOMWEB_PASSWORD", PASSWORD)
    settings = ServeSettings(model=str(tiny_ckpt), archive=server.dicomweb, archive_user=USER)
    client = TestClient(create_app(settings))
    assert client.get("/api/model").json()["archive"] is True
    missing = client.post("/api/study", data={"study_uid": "1.2.3.999"})
    assert missing.status_code == 400 and "not found in the archive" in missing.json()["detail"]
    assert client.post("/api/study", data={"study_uid": "1.2; DROP"}).status_code == 422
    dry = client.post("/api/study", data={"study_uid": study.StudyInstanceUID}).json()
    assert dry["stored"] == [] and _series(server, study) == ["CT", "US"]
    out = client.post(
        "/api/study", data={"study_uid": study.StudyInstanceUID, "push": "true"}
    ).json()
    (image,) = out["images"]
    assert image["instance"] == study.SOPInstanceUID
    assert image["predicted_class"] in image["probabilities"]
    assert [s["reason"] for s in out["skipped"]] == ["not an ultrasound image (modality CT)"]
    assert image["seg_sop_instance_uid"] in out["stored"] and len(out["stored"]) == 2
    assert _series(server, study) == ["CT", "SEG", "SR", "US"]


def test_a_server_without_an_archive_says_so(tiny_ckpt):
    client = TestClient(create_app(ServeSettings(model=str(tiny_ckpt))))
    assert client.get("/api/model").json()["archive"] is False
    r = client.post("/api/study", data={"study_uid": "1.2.3"})
    assert r.status_code == 400 and "no image archive" in r.json()["detail"]


def test_the_page_predicts_a_study_in_a_real_browser(archive, tiny_ckpt, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, study = archive
    env = {**os.environ, "DICOMWEB_PASSWORD": PASSWORD}
    options = [f"archive={server.dicomweb}", f"archive_user={USER}"]
    with running_server(tiny_ckpt, tmp_path / "serve.log", options=options, env=env) as (url, _):
        browser = _browser()
        try:
            open_page(browser, url)
            section = browser.find_element(By.ID, "archive")
            WebDriverWait(browser, 30).until(lambda b: section.is_displayed())
            browser.find_element(By.ID, "study-uid").send_keys(study.StudyInstanceUID)
            browser.find_element(By.ID, "study-go").click()
            status = browser.find_element(By.ID, "study-status")
            WebDriverWait(browser, 120).until(lambda b: "predicted" in status.text)
            assert status.text == "1 image(s) predicted; nothing stored."
            rows = browser.find_elements(By.CSS_SELECTOR, "#study-table tbody tr")
            assert len(rows) == 1 and study.SOPInstanceUID in rows[0].text
            notes = browser.find_element(By.ID, "study-notes").text
            assert "not an ultrasound image (modality CT)" in notes
        finally:
            browser.quit()

"""medmtl-preprocess on files and folders, including a corrupt file and bad output folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import DICOM_DIR, run_cli


def _folder(tmp_path: Path) -> Path:
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8)).save(inp / "a.png")
    Image.fromarray((rng.integers(0, 4095, (40, 50))).astype(np.uint16)).save(
        inp / "sub" / "b16.png"
    )
    (inp / "sub" / "ct.dcm").write_bytes((DICOM_DIR / "CT_small.dcm").read_bytes())
    (inp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (inp / "notes.txt").write_text("hello")
    return inp


def test_folder_with_a_corrupt_file(tmp_path):
    inp, out = _folder(tmp_path), tmp_path / "out"
    res = run_cli("preprocess", f"input={inp}", f"output={out}", "method=clahe")
    assert res.returncode == 1  # some refused
    assert (
        "3 image(s) written" in res.stdout
        and "1 refused" in res.stdout
        and "1 skipped" in res.stdout
    )
    assert "REFUSED" in res.stderr and "broken.png" in res.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["a.png", "sub/b16.png", "sub/ct.png"]  # structure kept
    for p in out.rglob("*.png"):
        with Image.open(p) as im:
            assert im.mode == "L"  # 8-bit grey
    assert (inp / "a.png").exists() and not list(inp.rglob("*_compare.png"))


def test_methods_and_compare_figure(tmp_path):
    src = DICOM_DIR / "gdcm-US-ALOKA-16.dcm"
    outs = {}
    for method in ("none", "he", "clahe"):
        out = tmp_path / method
        res = run_cli(
            "preprocess",
            f"input={src}",
            f"output={out}",
            f"method={method}",
            "compare=true",
            "crop_us_region=true",
        )
        assert res.returncode == 0, res.stderr
        outs[method] = np.asarray(Image.open(out / "gdcm-US-ALOKA-16.png"))
        fig = out / "gdcm-US-ALOKA-16_compare.png"
        assert fig.stat().st_size > 10_000
    assert outs["none"].shape == (392, 304)
    assert not np.array_equal(outs["none"], outs["he"]) and not np.array_equal(
        outs["he"], outs["clahe"]
    )


def test_window_conversion_without_window_is_refused(tmp_path):
    res = run_cli(
        "preprocess",
        f"input={DICOM_DIR / 'CT_small.dcm'}",
        f"output={tmp_path / 'o'}",
        "conversion.method=window",
    )
    assert res.returncode == 1 and "no WindowCenter/WindowWidth" in res.stderr
    res = run_cli(
        "preprocess",
        f"input={DICOM_DIR / 'CT_small.dcm'}",
        f"output={tmp_path / 'o2'}",
        "conversion.method=window",
        "conversion.center=40",
        "conversion.width=400",
    )
    assert res.returncode == 0


def test_output_folder_is_input_folder(tmp_path):
    inp = _folder(tmp_path)
    for out in (inp, inp / "sub"):
        res = run_cli("preprocess", f"input={inp}", f"output={out}")
        assert res.returncode == 2
        lines = [ln for ln in res.stderr.splitlines() if ln.startswith("medmtl: error:")]
        assert len(lines) == 1 and "inputs are never overwritten" in lines[0]
    assert not list(inp.rglob("*_compare.png"))


def test_missing_input_and_empty_folder(tmp_path):
    res = run_cli("preprocess", f"input={tmp_path / 'nope'}", f"output={tmp_path / 'o'}")
    assert res.returncode == 2 and "input=" in res.stderr and "not found" in res.stderr
    (tmp_path / "empty").mkdir()
    res = run_cli("preprocess", f"input={tmp_path / 'empty'}", f"output={tmp_path / 'o'}")
    assert res.returncode == 2 and "no image files found" in res.stderr

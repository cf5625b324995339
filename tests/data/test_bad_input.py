"""Each bad-input case gives one clear line naming the file, and nothing is dropped silently."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmtl.data.cache import load_all
from medmtl.data.index import index_class_folders
from medmtl.errors import DataError
from medmtl.preprocess.pipeline import PreprocessSettings

CLASSES = ("normal", "benign", "malignant")


def _img(path: Path, size=(40, 30), value=100) -> None:
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(path)


def _mask(path: Path, size=(40, 30), on=True) -> None:
    arr = np.zeros(size[::-1], np.uint8)
    if on:
        arr[5:15, 5:15] = 255
    Image.fromarray(arr).save(path)


@pytest.fixture
def good_root(tmp_path) -> Path:
    root = tmp_path / "ds"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for i in range(1, 4):
            _img(root / cls / f"{cls} ({i}).png", value=40 * i)
            _mask(root / cls / f"{cls} ({i})_mask.png", on=cls != "normal")
    return root


def test_good_root_indexes(good_root):
    assert index_class_folders(good_root, CLASSES).counts() == {c: 3 for c in CLASSES}


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"data folder not found\. Set data\.root"):
        index_class_folders(tmp_path / "nope", CLASSES)


def test_empty_root(tmp_path):
    with pytest.raises(DataError, match="folder is empty"):
        index_class_folders(tmp_path, CLASSES)


def test_unknown_class_folder(good_root):
    (good_root / "cyst").mkdir()
    with pytest.raises(DataError, match="unknown class folder.*cyst"):
        index_class_folders(good_root, CLASSES)


def test_missing_class_folder(good_root):
    shutil.rmtree(good_root / "normal")
    with pytest.raises(DataError, match="normal missing"):
        index_class_folders(good_root, CLASSES)


def test_image_without_mask(good_root):
    (good_root / "benign" / "benign (2)_mask.png").unlink()
    with pytest.raises(DataError, match=r"benign \(2\)\.png: image without a mask"):
        index_class_folders(good_root, CLASSES)
    # allowed for classes declared mask-optional: they get an empty mask, not dropped
    idx = index_class_folders(good_root, CLASSES, mask_optional_classes=("benign",))
    assert idx.counts()["benign"] == 3


def test_mask_without_image(good_root):
    (good_root / "benign" / "benign (3).png").unlink()
    with pytest.raises(DataError, match=r"mask without an image"):
        index_class_folders(good_root, CLASSES)


def test_non_image_files_are_reported_not_silently_used(good_root):
    (good_root / "benign" / "notes.txt").write_text("x")
    idx = index_class_folders(good_root, CLASSES)
    assert [p.name for p in idx.ignored_files] == ["notes.txt"]


def test_mask_of_another_size(good_root, tmp_path):
    _mask(good_root / "malignant" / "malignant (1)_mask.png", size=(20, 20))
    idx = index_class_folders(good_root, CLASSES)
    with pytest.raises(
        DataError, match=r"malignant \(1\)_mask\.png: mask is 20x20 but its image is 40x30"
    ):
        load_all(idx.cases, PreprocessSettings(image_size=32), tmp_path / "c")


def test_truncated_and_unreadable_files_are_all_reported(good_root, tmp_path):
    data = (good_root / "benign" / "benign (1).png").read_bytes()
    (good_root / "benign" / "benign (1).png").write_bytes(data[: len(data) // 2])
    (good_root / "normal" / "normal (2).png").write_bytes(b"not a png")
    idx = index_class_folders(good_root, CLASSES)
    with pytest.raises(DataError) as err:
        load_all(idx.cases, PreprocessSettings(image_size=32), tmp_path / "c")
    msg = str(err.value)
    assert msg.startswith("2 unusable file(s)")
    assert "benign (1).png" in msg and "normal (2).png" in msg and "\n" not in msg


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medmtl.cli.data", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_missing_root_is_one_line_exit_2(tmp_path):
    res = _cli("audit", "data=folder", f"data.root={tmp_path / 'missing'}")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    err_lines = [ln for ln in res.stderr.splitlines() if ln.startswith("medmtl: error:")]
    assert len(err_lines) == 1 and "data folder not found" in err_lines[0]


def test_cli_audit_reports_bad_files_and_exits_1(good_root, tmp_path):
    (good_root / "normal" / "normal (2).png").write_bytes(b"broken")
    _mask(good_root / "malignant" / "malignant (1)_mask.png", size=(20, 20))
    (good_root / "benign" / "benign (3)_mask.png").unlink()
    res = _cli(
        "audit", "data=folder", f"data.root={good_root}", f"data.split_file={tmp_path / 's.json'}"
    )
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout
    assert "Unreadable files: 1" in out and "normal (2).png" in out
    assert "Image/mask size mismatches: 1" in out
    assert "image without a mask" in out
    assert "NOT trainable" in out


def test_cli_unknown_command():
    res = _cli("frobnicate")
    assert res.returncode == 2 and "first argument must be one of audit, split" in res.stderr

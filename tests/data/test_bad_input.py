"""Each bad-input case gives one clear line naming the file, and nothing is dropped silently."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmtl.data.datamodule import MedDataModule
from medmtl.data.index import index_class_folders
from medmtl.errors import DataError
from tests.conftest import run_cli

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
    assert [(p.name, why) for p, why in idx.ignored_files] == [
        ("notes.txt", "not an image file (extension '.txt')")
    ]


def _folder(root: Path, tmp_path: Path) -> MedDataModule:
    """``data=folder`` on ``root``: the data module every command reads a data set with."""
    return MedDataModule.from_config(
        dict(
            name=root.name,
            source="folder",
            root=str(root),
            classes=list(CLASSES),
            image_size=32,
            cache_dir=str(tmp_path / "c"),
        )
    )


def test_mask_of_another_size(good_root, tmp_path):
    _mask(good_root / "malignant" / "malignant (1)_mask.png", size=(20, 20))
    with pytest.raises(
        DataError, match=r"malignant \(1\)_mask\.png: mask is 20x20 but its image is 40x30"
    ):
        _folder(good_root, tmp_path).load()


def test_truncated_and_unreadable_files_are_all_reported(good_root, tmp_path):
    data = (good_root / "benign" / "benign (1).png").read_bytes()
    (good_root / "benign" / "benign (1).png").write_bytes(data[: len(data) // 2])
    (good_root / "normal" / "normal (2).png").write_bytes(b"not a png")
    with pytest.raises(DataError) as err:
        _folder(good_root, tmp_path).load()
    msg = str(err.value)
    assert msg.startswith("2 problem(s) with the data of ds")
    assert "benign (1).png" in msg and "normal (2).png" in msg and "\n" not in msg


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli("data", *args, timeout=300)


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


def test_empty_class_folder_is_named_and_stops(good_root, tmp_path):
    for f in (good_root / "normal").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"normal: class folder has no images.*drop_empty_classes"):
        index_class_folders(good_root, CLASSES)
    # the audit lists it (not just "1 problem") and exits 1
    res = _cli(
        "audit", "data=folder", f"data.root={good_root}", f"data.split_file={tmp_path / 's.json'}"
    )
    assert res.returncode == 1
    assert "normal: class folder has no images" in res.stdout
    assert "NOT trainable (1 problem(s))" in res.stdout
    # explicitly: train without that class, relabelled 0..n-1
    idx = index_class_folders(good_root, CLASSES, drop_empty_classes=True)
    assert idx.classes == ("benign", "malignant")
    assert {(c.class_name, c.label) for c in idx.cases} == {("benign", 0), ("malignant", 1)}


def test_subfolders_and_hidden_files_are_listed(good_root, tmp_path):
    (good_root / "benign" / "extra").mkdir()
    _img(good_root / "benign" / "extra" / "x.png")
    (good_root / "benign" / ".hidden.png").write_bytes(b"x")
    idx = index_class_folders(good_root, CLASSES)
    why = {p.name: reason for p, reason in idx.ignored_files}
    assert "subfolder" in why["extra"] and "hidden" in why[".hidden.png"]
    res = _cli(
        "audit", "data=folder", f"data.root={good_root}", f"data.split_file={tmp_path / 's.json'}"
    )
    assert res.returncode == 0 and "Ignored (not used for training): 2" in res.stdout
    assert "extra: a subfolder" in res.stdout


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (the bytes of a decompression bomb's start)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * 4)  # a few rows only: never decoded
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat))


def test_huge_image_is_a_bad_file_like_any_other(good_root, tmp_path, monkeypatch):
    from medmtl.io.image import read_image

    big = good_root / "benign" / "benign (2).png"
    _png_header_only(big, 20000, 20000)
    with pytest.raises(DataError, match=r"20000 x 20000 pixels is more than the limit.*MEDMTL_MAX"):
        read_image(big)
    # the audit lists it with the other files instead of crashing
    (good_root / "normal" / "normal (2).png").write_bytes(b"broken")
    res = _cli(
        "audit", "data=folder", f"data.root={good_root}", f"data.split_file={tmp_path / 's.json'}"
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "Unreadable files: 2" in res.stdout and "20000 x 20000" in res.stdout
    # the limit is configurable: a 40 x 30 image is refused under a 1000-pixel limit
    monkeypatch.setenv("MEDMTL_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(DataError, match="40 x 30 pixels is more than the limit of 1,000"):
        read_image(good_root / "benign" / "benign (1).png")
    monkeypatch.setenv("MEDMTL_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(DataError, match="MEDMTL_MAX_IMAGE_PIXELS='lots'"):
        read_image(good_root / "benign" / "benign (1).png")


def test_tiny_image_is_refused(tmp_path):
    from medmtl.io.image import read_image

    _img(tmp_path / "dot.png", size=(1, 1))
    with pytest.raises(DataError, match=r"dot\.png: the image is only 1 x 1 pixels"):
        read_image(tmp_path / "dot.png")

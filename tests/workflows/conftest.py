"""Fixtures several workflow tests share."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def onnx_model(tiny_ckpt, tmp_path_factory) -> Path:
    """The tiny phantom model, exported to ONNX once."""
    from medmtl.inference.export import export_onnx

    return export_onnx(tiny_ckpt, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="session")
def busi_folder(busi, tmp_path_factory) -> Path:
    """12 BUSI scans, 4 of each class; malignant (3) and (4) are near copies (one lesion)."""
    folder = tmp_path_factory.mktemp("busi12")
    for cls in ("benign", "malignant", "normal"):
        for k in range(1, 5):
            shutil.copy(busi / cls / f"{cls} ({k}).png", folder / f"{cls}_{k}.png")
    return folder

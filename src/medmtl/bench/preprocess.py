"""How long HE, CLAHE and the 8-bit conversion take on a BUSI-sized and a large 16-bit image."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from medmtl.bench.common import machine_line, time_call
from medmtl.preprocess.intensity import apply_clahe, equalize_hist, to_uint8


def _test_images(busi_image: Path | None) -> tuple[np.ndarray, str, np.ndarray]:
    if busi_image is not None and busi_image.exists():
        from medmtl.io import read_grey

        img8, name = read_grey(busi_image), f"BUSI `{busi_image.name}`"
    else:  # a smooth synthetic scan of BUSI's median size
        rng = np.random.default_rng(0)
        img8 = cv2.GaussianBlur(rng.integers(0, 256, (475, 565)).astype(np.uint8), (0, 0), 2)
        name = "synthetic"
    rng = np.random.default_rng(1)
    smooth = cv2.resize(
        rng.random((256, 256)).astype(np.float32), (2048, 2048), interpolation=cv2.INTER_CUBIC
    )
    noise = rng.normal(0, 0.05, (2048, 2048)).astype(np.float32)
    img16 = (np.clip(smooth + noise, 0, 1) * 4095).astype(np.uint16)  # 12-bit data in 16 bits
    return img8, name, img16


def run(busi_image: Path | None = None, repeats: int = 7) -> tuple[list[tuple[str, str, str]], str]:
    """Rows (operation, image, time) and the description of the images."""
    img8, name8, img16 = _test_images(busi_image)
    h8, w8 = img8.shape
    s8, s16 = f"{w8}×{h8} uint8", "2048×2048 uint16 (12-bit)"
    rows = []
    cases = [
        ("HE, `equalize_hist` (default: OpenCV for uint8)", s8, lambda: equalize_hist(img8)),
        ("HE, `equalize_hist(backend='numpy')`", s8, lambda: equalize_hist(img8, backend="numpy")),
        (
            "CLAHE clip 2, 8×8, `apply_clahe` (default: OpenCV for uint8)",
            s8,
            lambda: apply_clahe(img8, 2.0, 8),
        ),
        (
            "CLAHE clip 2, 8×8, `apply_clahe(backend='numpy')`",
            s8,
            lambda: apply_clahe(img8, 2.0, 8, backend="numpy"),
        ),
        ("to_uint8 full", s16, lambda: to_uint8(img16, "full")),
        ("to_uint8 percentile 0.5–99.5", s16, lambda: to_uint8(img16, "percentile")),
        ("HE, `equalize_hist` (numpy)", s16, lambda: equalize_hist(img16)),
        (
            "CLAHE clip 2, 8×8, `apply_clahe` (numpy, 4096 bins)",
            s16,
            lambda: apply_clahe(img16, 2.0, 8),
        ),
    ]
    for label, size, fn in cases:
        t = time_call(fn, repeats=repeats, min_time=0.05)
        rows.append((label, size, t.ms()))
    return rows, f"{name8} ({s8}); a smooth noisy {s16} image"


def section(rows: list[tuple[str, str, str]], images: str, command: str) -> str:
    lines = [
        "## Preprocessing: HE, CLAHE and 8-bit conversion",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_line()}  ",
        f"Images: {images}. Wall-clock time per call (OpenCV may use both cores), median of "
        "7 repeats, min–max in brackets.",
        "",
        "| operation | image | time per image |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"

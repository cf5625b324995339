"""A procedural ultrasound-like phantom: the embedded default data set (no download needed).

Each image has speckle, depth attenuation and tissue layers (skin, subcutaneous fat with
lobules, glandular tissue, pectoral muscle). Lesions follow the BI-RADS cues a sonographer uses:

* benign: smooth oval, wider than tall, hypoechoic, posterior acoustic enhancement;
* malignant: irregular or spiculated margin, taller than wide, hypoechoic and heterogeneous,
  posterior acoustic shadowing;
* normal: no lesion (mask empty).

Generation is deterministic from ``seed`` and the image index; the result is written once in
the BUSI folder layout under the cache folder and read back like any class-folder data set.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from medmtl.errors import WriteError
from medmtl.io.files import atomic_path
from medmtl.settings.data import Phantom

log = logging.getLogger(__name__)

PHANTOM_CLASSES = ("normal", "benign", "malignant")
PHANTOM_VERSION = 1  # bump when the generator changes so old caches are not reused
PHANTOM = Phantom()  # data.phantom's defaults


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    noise = rng.standard_normal(shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    return noise / (noise.std() + 1e-6)


def _boundary(rng: np.random.Generator, x: np.ndarray, depth: float, wobble: float) -> np.ndarray:
    """A wavy horizontal tissue boundary at ``depth`` (fraction of the height)."""
    f1, f2 = rng.uniform(0.5, 1.5), rng.uniform(2.0, 4.0)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    return depth + wobble * (
        np.sin(2 * np.pi * f1 * x + p1) + 0.4 * np.sin(2 * np.pi * f2 * x + p2)
    )


def _lesion_mask(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, kind: str
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Boolean lesion mask and its (cx, cy, half-width, half-height) in normalised units."""
    cx = rng.uniform(0.3, 0.7)
    cy = rng.uniform(0.4, 0.58)
    r0 = rng.uniform(0.08, 0.15)
    theta = np.arctan2(yy - cy, xx - cx)
    if kind == "benign":
        sx, sy = rng.uniform(1.3, 1.8), rng.uniform(0.7, 0.9)  # wider than tall
        radius = r0 * (1 + 0.04 * np.cos(2 * theta + rng.uniform(0, 6.3)))  # smooth
    else:
        sx, sy = rng.uniform(0.7, 0.9), rng.uniform(1.2, 1.6)  # taller than wide
        radius = np.full_like(theta, r0)
        for k in range(3, 8):  # irregular (lobulated / angular) margin
            radius += r0 * rng.uniform(0.03, 0.1) * np.cos(k * theta + rng.uniform(0, 6.3))
        n_spikes = rng.integers(5, 11)
        for phi in rng.uniform(-np.pi, np.pi, n_spikes):  # spiculations
            d = np.angle(np.exp(1j * (theta - phi)))
            radius += r0 * rng.uniform(0.25, 0.5) * np.exp(-((d / 0.09) ** 2))
    dist = np.sqrt(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2)
    mask = dist <= radius
    ys, xs = np.nonzero(mask)
    h, w = yy.shape
    half_w = (xs.max() - xs.min() + 1) / (2 * w) if xs.size else 0.0
    half_h = (ys.max() - ys.min() + 1) / (2 * h) if ys.size else 0.0
    return mask, (cx, cy, half_w, half_h)


def generate_image(
    seed: int, index: int, kind: str, size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """One phantom image (uint8, ``size``×``size``) and its lesion mask (bool)."""
    if kind not in PHANTOM_CLASSES:
        raise ValueError(f"unknown phantom class {kind!r}; expected one of {PHANTOM_CLASSES}")
    rng = np.random.default_rng([seed, index, PHANTOM_CLASSES.index(kind)])
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= h
    xx /= w
    x = xx[0]

    # tissue layers (echogenicity before speckle)
    skin = _boundary(rng, x, rng.uniform(0.04, 0.07), 0.005)
    fat = _boundary(rng, x, rng.uniform(0.2, 0.3), 0.025)
    gland = _boundary(rng, x, rng.uniform(0.72, 0.82), 0.03)
    echo = np.where(yy < skin, 0.95, 0.0)
    echo = np.where((yy >= skin) & (yy < fat), 0.32, echo)
    echo = np.where((yy >= fat) & (yy < gland), 0.62, echo)
    muscle = 0.45 + 0.12 * np.sin(2 * np.pi * (yy * rng.uniform(18, 26) + 0.15 * xx))
    echo = np.where(yy >= gland, muscle, echo).astype(np.float32)
    echo *= 1 + 0.18 * _smooth_noise(rng, (h, w), size / 40)  # tissue texture
    for _ in range(rng.integers(2, 5)):  # fat lobules: dark ovals in every class (distractors)
        lx, ly = rng.uniform(0.05, 0.95), rng.uniform(0.1, 0.22)
        ax, ay = rng.uniform(0.04, 0.09), rng.uniform(0.02, 0.04)
        lob = ((xx - lx) / ax) ** 2 + ((yy - ly) / ay) ** 2 <= 1
        echo[lob] *= 0.7

    mask = np.zeros((h, w), dtype=bool)
    if kind != "normal":
        mask, (cx, cy, hw, hh) = _lesion_mask(rng, yy, xx, kind)
        below = (yy > cy) & (np.abs(xx - cx) < hw * 0.9)
        fade = np.clip(1 - (yy - cy - hh) / 0.45, 0, 1)
        if kind == "benign":
            interior = rng.uniform(0.08, 0.16)
            echo[below & ~mask] *= (1 + rng.uniform(0.35, 0.6) * fade)[below & ~mask]
            echo[mask] = interior * (1 + 0.1 * _smooth_noise(rng, (h, w), size / 60))[mask]
        else:
            interior = rng.uniform(0.1, 0.2)
            echo[below & ~mask] *= (1 - rng.uniform(0.5, 0.7) * fade)[below & ~mask]
            echo[mask] = interior * (1 + 0.45 * _smooth_noise(rng, (h, w), size / 90))[mask]
            edge = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~mask
            echo[edge] *= 1.35  # echogenic halo

    # depth attenuation after partial time-gain compensation
    echo *= np.exp(-rng.uniform(0.4, 1.0) * yy)
    # fully developed speckle: Rayleigh amplitude, grain elongated laterally
    re, im = rng.standard_normal((2, h, w)).astype(np.float32)
    re = cv2.GaussianBlur(re, (0, 0), sigmaX=1.4, sigmaY=0.7)
    im = cv2.GaussianBlur(im, (0, 0), sigmaX=1.4, sigmaY=0.7)
    speckle = np.hypot(re, im)
    speckle /= speckle.mean()
    intensity = np.clip(echo, 0, None) * speckle
    img = np.log1p(25 * intensity) / np.log1p(25 * 1.6)  # log compression as on a scanner
    img = np.clip(img * rng.uniform(0.8, 0.95), 0, 1)
    return (img * 255).astype(np.uint8), mask


def ensure_phantom(
    cache_dir: str | Path,
    seed: int = PHANTOM.seed,
    counts: dict[str, int] | None = None,
    size: int = PHANTOM.size,
) -> Path:
    """Generate the phantom data set once (or reuse it) and return its root folder
    (``counts``: images per class, None: ``data.phantom``'s default)."""
    counts = dict(counts or PHANTOM.counts)
    unknown = set(counts) - set(PHANTOM_CLASSES)
    if unknown:
        raise ValueError(f"unknown phantom classes {sorted(unknown)}; expected {PHANTOM_CLASSES}")
    settings = {"version": PHANTOM_VERSION, "seed": seed, "counts": counts, "size": size}
    tag = f"v{PHANTOM_VERSION}_seed{seed}_s{size}_" + "_".join(
        f"{c}{counts.get(c, 0)}" for c in PHANTOM_CLASSES
    )
    root = Path(cache_dir) / "phantom" / tag
    done = root / "phantom.json"
    if done.exists():
        return root
    log.info("Generating the phantom data set (%s) in %s", tag, root)
    try:
        with atomic_path(root) as tmp:  # a half-written phantom is never used
            for cls in PHANTOM_CLASSES:
                (tmp / cls).mkdir(parents=True, exist_ok=True)
                for i in range(1, counts.get(cls, 0) + 1):
                    img, mask = generate_image(seed, i, cls, size)
                    Image.fromarray(img).save(tmp / cls / f"{cls} ({i}).png")
                    Image.fromarray(mask.astype(np.uint8) * 255).save(
                        tmp / cls / f"{cls} ({i})_mask.png"
                    )
            (tmp / "phantom.json").write_text(json.dumps(settings, indent=1))
    except WriteError:
        if not done.exists():  # not: another process finished the same phantom first
            raise
    return root

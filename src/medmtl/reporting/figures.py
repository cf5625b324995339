"""Figures built from arrays (matplotlib, Agg backend: no screen needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from medmtl.io.files import atomic_path
from medmtl.preprocess.intensity import cdf, histogram, intensity_stats

# Figures are built with matplotlib's object API (no pyplot, no global backend switch), so
# they save without a screen and still display inline in a notebook.


def enhancement_comparison(panels: Sequence[tuple[str, np.ndarray]], title: str = "") -> Figure:
    """The study's comparison: each image above its histogram and CDF, with brightness
    (mean) and contrast (standard deviation and max − min) in the panel title."""
    n = len(panels)
    fig = Figure(figsize=(4.2 * n, 7.2))
    axes = fig.subplots(2, n, gridspec_kw={"height_ratios": [3, 2]})
    axes = np.asarray(axes).reshape(2, n)
    for col, (name, img) in enumerate(panels):
        st = intensity_stats(img)
        ax = axes[0, col]
        top = 255 if img.dtype == np.uint8 else float(img.max())
        ax.imshow(img, cmap="gray", vmin=0, vmax=top)
        ax.set_title(
            f"{name}\nbrightness {st.brightness:.1f} | contrast σ {st.contrast_std:.1f}, "
            f"range {st.contrast_range:.0f}",
            fontsize=9,
        )
        ax.axis("off")
        counts, edges = histogram(img, bins=256)
        hax = axes[1, col]
        hax.stairs(counts, np.append(edges, 2 * edges[-1] - edges[-2]), fill=True, color="0.35")
        hax.set_xlim(0, edges[-1] + (edges[1] - edges[0]))
        hax.set_xlabel("grey level")
        hax.set_ylabel("pixels")
        cax = hax.twinx()
        cax.plot(edges, cdf(counts), color="tab:red")
        cax.set_ylim(0, 1.02)
        cax.set_ylabel("CDF", color="tab:red")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save atomically (a half-written PNG never appears under the final name)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return Path(path)

"""Qualitative comparison (the study's Q6/Q7): the same images, ground truth and each model's mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure


@dataclass(frozen=True)
class Panel:
    """One image of the grid: a title, the 8-bit image and an optional mask drawn as a contour."""

    title: str
    image: np.ndarray
    mask: np.ndarray | None = None
    truth: bool = False  # the ground truth (yellow contour); a model's mask is red


def pick_cases(labels: Sequence[int], n: int) -> list[int]:
    """``n`` indices spread evenly over the split after sorting by class (all classes appear)."""
    order = sorted(range(len(labels)), key=lambda i: (labels[i], i))
    if n >= len(order):
        return order
    return [order[int(round(k * (len(order) - 1) / max(n - 1, 1)))] for k in range(n)]


def pick_disagreements(dice_a: np.ndarray, dice_b: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` images where two models' Dice differ most: about half where the second
    does better (the first misses a lesion, or marks one on a normal image, which scores 0),
    then half the reverse, largest difference first; an image where both score the same is
    never picked."""
    gain = np.asarray(dice_b, dtype=float) - np.asarray(dice_a, dtype=float)
    better_b = [int(i) for i in np.argsort(-gain, kind="stable") if gain[i] > 0]
    better_a = [int(i) for i in np.argsort(gain, kind="stable") if gain[i] < 0]
    first = min(len(better_b), max(n - len(better_a), (n + 1) // 2))
    return better_b[:first] + better_a[: n - first]


def comparison_figure(rows: Sequence[Sequence[Panel]]) -> Figure:
    """One row per image: its panels side by side (image, ground truth, one per model)."""
    cols = max(len(r) for r in rows)
    fig = Figure(figsize=(2.3 * cols, 2.3 * len(rows)))
    axes = np.asarray(fig.subplots(len(rows), cols)).reshape(len(rows), cols)
    for r, panels in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(panels):
                continue
            p = panels[c]
            ax.imshow(p.image, cmap="gray", vmin=0, vmax=255)
            if p.mask is not None and p.mask.any():
                colour = "yellow" if p.truth else "red"
                ax.contour(p.mask, levels=[0.5], colors=[colour], linewidths=1)
            ax.set_title(p.title, fontsize=7)
    fig.tight_layout()
    return fig

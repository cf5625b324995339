"""How well the unlike-training score tells in-domain scans from others: AUROC with a CI.

:func:`table` (``python -m medmtl.cli.unlike <in-domain predictions.csv> <other.csv> ...``)
reads the ``unlike_score`` column of predictions files (``medmtl-eval``'s
``predictions_<split>.csv`` or ``medmtl-predict``'s ``predictions.csv``) and prints, for each
other file, the AUROC of the score between the in-domain images (negatives) and that file's
images (positives), its 95 % bootstrap CI (both sets resampled) and the share of each set
flagged (score above 1), as a Markdown table.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from medmtl.errors import DataError
from medmtl.reporting.statistics import LEVEL, N_BOOT


def read_scores(path: str | Path) -> np.ndarray:
    """The ``unlike_score`` column of a predictions file; a DataError naming the file when it
    has none (a model without the score) or a value is not a number."""
    path = Path(path)
    try:
        rows = list(csv.DictReader(path.open(newline="", encoding="utf-8")))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the predictions file ({exc}).") from exc
    if not rows or "unlike_score" not in rows[0]:
        raise DataError(
            f"{path}: no unlike_score column (no images, or a model without the score: "
            "medmtl-calibrate fits it)."
        )
    try:
        return np.array([float(r["unlike_score"]) for r in rows])
    except ValueError as exc:
        raise DataError(f"{path}: an unlike_score is not a number ({exc}).") from exc


def auroc(negative: np.ndarray, positive: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (the Mann-Whitney AUROC)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.r_[negative, positive])
    n, p = len(negative), len(positive)
    return float((ranks[n:].sum() - p * (p + 1) / 2) / (n * p))


def auroc_ci(
    negative: np.ndarray, positive: np.ndarray, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float, float]:
    """The AUROC and its percentile bootstrap CI (each set resampled on its own)."""
    rng = np.random.default_rng(seed)
    samples = [
        auroc(rng.choice(negative, len(negative)), rng.choice(positive, len(positive)))
        for _ in range(n_boot)
    ]
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return auroc(negative, positive), float(low), float(high)


def table(inside: str | Path, others: list[str | Path]) -> str:
    """The Markdown table of :func:`auroc_ci` for each of ``others`` against ``inside``."""
    neg = read_scores(inside)
    lines = [
        f"In-domain: `{inside}` ({len(neg)} images, {np.mean(neg > 1):.1%} flagged)",
        "",
        "| against | images | flagged | AUROC | 95 % CI |",
        "|---|---:|---:|---:|---|",
    ]
    for other in others:
        pos = read_scores(other)
        value, low, high = auroc_ci(neg, pos)
        lines.append(
            f"| `{other}` | {len(pos)} | {np.mean(pos > 1):.1%} | {value:.4f} | "
            f"{low:.4f}–{high:.4f} |"
        )
    return "\n".join(lines)

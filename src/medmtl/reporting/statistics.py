"""How sure a table is: bootstrap confidence intervals, paired comparisons and Holm's correction.

All resampling is over **test images** (the unit the metrics average over), seeded, with the
metric definitions of :mod:`medmtl.reporting.per_image`:

* a run's 95 % CI: percentile bootstrap (``n_boot`` resamples of the images with replacement);
* a cell pooled over seeds or folds: mean ± standard deviation and the t-interval of the mean;
* a difference to a baseline: paired bootstrap over the same images (the same resample for both
  rows). Runs of the same seed/fold are paired and their differences averaged; otherwise each
  row's per-image predictions are averaged over its runs first. The two-sided p-value is the
  share of resampled differences at least as far from the observed one as the observed one is
  from 0 (the bootstrap distribution shifted to the null), and p-values are Holm-corrected
  over the rows compared with the same baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medmtl.errors import DataError
from medmtl.reporting.per_image import PerImage, average_runs, compute_metrics

N_BOOT = 2000
LEVEL = 0.95


def resample_weights(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot, n): how often each of ``n`` images is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = idx + n * np.arange(n_boot)[:, None]
    return np.bincount(flat.ravel(), minlength=n * n_boot).reshape(n_boot, n).astype(float)


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def text(self, digits: int = 3, signed: bool = False) -> str:
        f = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
        return f"{f.format(self.value)} [{f.format(self.low)}, {f.format(self.high)}]".replace(
            "-", "−"
        )


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return (math.nan, math.nan)
    a = (1 - level) / 2
    return float(np.quantile(s, a)), float(np.quantile(s, 1 - a))


def bootstrap_ci(
    p: PerImage,
    keys: Sequence[str],
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Interval]:
    """Percentile-bootstrap CI of each metric in ``keys`` (metric names without the split)."""
    point = compute_metrics(p)
    boot = compute_metrics(p, resample_weights(len(p), n_boot, seed))
    out = {}
    for k in keys:
        if k in point and k != "confusion_matrix":
            out[k] = Interval(float(point[k][0]), *_percentiles(boot[k], level))
    return out


def mean_ci(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, Interval]:
    """Mean, standard deviation and the t-interval of the mean of repeated runs (n >= 2)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if v.size < 2:
        raise ValueError("a CI of the mean needs at least two values")
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1)) * sd / math.sqrt(v.size)
    return mean, sd, Interval(mean, mean - half, mean + half)


@dataclass(frozen=True)
class Difference:
    """A row minus the baseline for one metric: paired CI, p-value, Holm-corrected p-value."""

    key: str
    ci: Interval
    p: float
    paired: bool
    p_holm: float = math.nan

    @property
    def significant(self) -> bool:
        return bool(self.p_holm < 0.05)


def _check_same_images(a: PerImage, b: PerImage) -> None:
    if a.ids != b.ids:
        raise DataError(
            f"runs evaluated on different images ({len(a)} vs {len(b)}, data sets "
            f"{a.dataset or '?'} / {b.dataset or '?'}); a paired comparison needs the same test "
            "split for both rows."
        )


def paired_differences(
    rows: Sequence[PerImage],
    baseline: Sequence[PerImage],
    keys: Sequence[str],
    paired: bool,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Difference]:
    """``rows`` minus ``baseline`` for each metric in ``keys``.

    With ``paired``, ``rows[k]`` and ``baseline[k]`` are runs of the same seed/fold and the
    difference is the mean of their differences; otherwise each side is averaged over its runs
    first (:func:`medmtl.reporting.per_image.average_runs`).
    """
    if not paired:
        rows, baseline = [average_runs(rows)], [average_runs(baseline)]
    if len(rows) != len(baseline) or not rows:
        raise ValueError("paired comparison needs the same number of runs on both sides")
    for a, b in zip(rows, baseline, strict=True):
        _check_same_images(a, b)
    W = resample_weights(len(rows[0]), n_boot, seed)
    observed: dict[str, list[float]] = {}
    boot: dict[str, list[np.ndarray]] = {}
    for a, b in zip(rows, baseline, strict=True):
        ma, mb = compute_metrics(a), compute_metrics(b)
        ba, bb = compute_metrics(a, W), compute_metrics(b, W)
        for k in keys:
            if k in ma and k in mb:
                observed.setdefault(k, []).append(float(ma[k][0] - mb[k][0]))
                boot.setdefault(k, []).append(ba[k] - bb[k])
    out = {}
    for k, obs_list in observed.items():
        obs = float(np.mean(obs_list))
        d = np.mean(boot[k], axis=0)
        d = d[np.isfinite(d)]
        if not math.isfinite(obs) or d.size == 0:
            continue
        far = np.abs(d - obs) >= abs(obs) - 1e-12
        p = (1 + int(far.sum())) / (d.size + 1)
        out[k] = Difference(k, Interval(obs, *_percentiles(d, level)), min(1.0, p), paired)
    return out


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given; NaN stays NaN)."""
    idx = [i for i, p in enumerate(pvalues) if math.isfinite(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m = len(order)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted

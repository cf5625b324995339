"""Whether a batch of scans comes from the distribution the model was trained on: a kernel
two-sample test on the model's pooled encoder features against a reference sample stored with
the model.

- **Features.** The deepest encoder feature averaged over space (what the classifier pools and
  the unlike-training score uses), projected onto the leading principal components of the
  *training* images' features, whitened (scikit-learn's PCA). The projection is fitted on
  images other than the reference so that the reference is not favoured by it.
- **Reference.** The validation images' projected features (images the model never trained
  on, like any new scan from its own distribution).
- **Test.** The unbiased squared maximum mean discrepancy (MMD², Gretton et al., JMLR 2012)
  with a Gaussian kernel whose width is the median distance of the pooled sample; its p-value
  by permutation of the pooled sample (``scipy.stats.permutation_test``, one-sided). The
  effect size is MMD² itself (0: no difference; at most 2) and its distance from the
  permutation null in null standard deviations (``z``).
- **Near copies count once.** The permutation p-value holds for exchangeable images; two
  images of the same lesion (a re-crop, the same scan with other overlays, the same patient)
  are not, and a sample holding several such pairs is flagged far more often than ``alpha``
  says (``docs/results.md``, issue 43). So the reference keeps one image per group of the
  split (near copies and the data set's patients), and a batch one image per group of near
  copies (:func:`one_per_group`; the groups come from the caller).
- **Ensembles.** Each member has its own projection and reference (a fold model: its own
  validation fold); the batch is tested against each, and the p-values are combined by
  Bonferroni (the smallest times the number of members), valid whatever their dependence.

Everything here is numpy (the ONNX path imports no torch); the network holds the reference as
buffers (:class:`medmtl.models.multitask.MultiTaskNet`), an export as metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medmtl.errors import ConfigError
from medmtl.settings.train import SHIFT_ALPHA, SHIFT_MAX_REFERENCE, SHIFT_PERMUTATIONS


@dataclass(frozen=True)
class ShiftReference:
    """One model's projection (``mean`` (D,), ``components`` (k, D), whitening included) and
    its reference sample of projected features (n, k)."""

    mean: np.ndarray
    components: np.ndarray
    sample: np.ndarray

    @classmethod
    def fit(
        cls,
        train: np.ndarray,
        reference: np.ndarray,
        dims: int,
        max_reference: int = SHIFT_MAX_REFERENCE,
        groups: Sequence[int] | None = None,
    ) -> ShiftReference:
        """The projection from ``train`` (n, D) features, the reference from ``reference``:
        one image per group of ``groups`` (one id per reference image; none: every image its
        own), a seeded random subset of ``max_reference`` of them when there are more."""
        from sklearn.decomposition import PCA

        train = np.asarray(train, dtype=np.float64)
        reference = np.asarray(reference, dtype=np.float64)[one_per_group(groups, len(reference))]
        if len(reference) > max_reference:
            keep = np.random.default_rng(0).choice(len(reference), max_reference, replace=False)
            reference = reference[np.sort(keep)]
        if len(train) < 2 or len(reference) < 2:
            raise ConfigError(
                "the shift test needs training and validation images "
                f"(got {len(train)} and {len(reference)})."
            )
        k = int(min(dims, len(train) - 1, train.shape[1]))
        pca = PCA(n_components=k, whiten=True, svd_solver="full").fit(train)
        # whitening folded into the components: project(x) = (x - mean) @ components.T
        components = pca.components_ / np.sqrt(pca.explained_variance_)[:, None]
        ref = cls(pca.mean_, components, np.zeros((0, k)))
        return cls(ref.mean, ref.components, ref.project(reference))

    def project(self, features: np.ndarray) -> np.ndarray:
        """(m, D) pooled features -> (m, k)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
            raise ConfigError(
                f"shift test: features of shape {features.shape}, the model's have "
                f"{self.mean.shape[0]} dimensions."
            )
        return (features - self.mean) @ self.components.T

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.astype(np.float32).tolist(),
            "components": self.components.astype(np.float32).tolist(),
            "sample": self.sample.astype(np.float32).tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShiftReference:
        mean = np.asarray(d["mean"], dtype=np.float64)
        components = np.asarray(d["components"], dtype=np.float64).reshape(-1, len(mean))
        sample = np.asarray(d["sample"], dtype=np.float64).reshape(-1, len(components))
        return cls(mean, components, sample)

    @property
    def size(self) -> int:
        return int(len(self.sample))


def mmd_test(
    reference: np.ndarray,
    batch: np.ndarray,
    permutations: int = SHIFT_PERMUTATIONS,
    seed: int = 0,
) -> dict[str, float]:
    """Unbiased MMD² of ``batch`` (m, k) against ``reference`` (n, k), Gaussian kernel of
    median-heuristic width, and its one-sided permutation p-value (``permutations`` random
    re-splits of the pooled sample; seeded, so one batch always gets one p-value)."""
    from scipy.spatial.distance import cdist
    from scipy.stats import permutation_test

    n, m = len(reference), len(batch)
    if n < 2 or m < 2:
        raise ConfigError(f"the shift test needs at least 2 images on each side (got {n}, {m}).")
    pooled = np.concatenate([reference, batch]).astype(np.float64)
    d2 = cdist(pooled, pooled, "sqeuclidean")
    width = float(np.median(d2[np.triu_indices(len(pooled), 1)]))
    kernel = np.exp(-d2 / width) if width > 0 else np.ones_like(d2)
    np.fill_diagonal(kernel, 0.0)  # the unbiased estimate leaves out each point with itself
    row = kernel.sum(1)
    total = row.sum()

    def statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        # only the batch's indices matter: a = its indicator, then every sum of K over the
        # blocks follows from a^T K a and a^T K 1
        y = np.moveaxis(np.asarray(y, dtype=np.int64), axis, -1)
        a = np.zeros(y.shape[:-1] + (len(pooled),))
        np.put_along_axis(a, y, 1.0, axis=-1)
        yy = ((a @ kernel) * a).sum(-1)
        ay = a @ row
        xy = ay - yy
        xx = total - 2 * ay + yy
        return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * xy / (n * m)

    result = permutation_test(
        (np.arange(n), np.arange(n, n + m)),
        statistic,
        permutation_type="independent",
        vectorized=True,
        n_resamples=int(permutations),
        alternative="greater",
        random_state=np.random.default_rng(seed),
    )
    null = np.asarray(result.null_distribution)
    spread = float(null.std())
    return {
        "mmd2": float(result.statistic),
        "p_value": float(result.pvalue),
        "z": float((result.statistic - null.mean()) / spread) if spread > 0 else 0.0,
        "width": width,
    }


def one_per_group(groups: Sequence[int] | None, n: int) -> np.ndarray:
    """The indices of the first of ``n`` images in each group (``groups``: one id per image;
    None: all ``n``), in order."""
    if groups is None:
        return np.arange(n)
    if len(groups) != n:
        raise ConfigError(f"shift test: {len(groups)} group ids for {n} images.")
    _, first = np.unique(np.asarray(groups), return_index=True)
    return np.sort(first)


@dataclass(frozen=True)
class ShiftResult:
    """A batch's test against a model: the combined p-value, the effect size (the members'
    mean MMD² and z) and each member's own test. ``images`` were given, ``distinct`` of them
    tested (near copies counted once)."""

    images: int
    distinct: int
    p_value: float
    mmd2: float
    z: float
    alpha: float
    members: list[dict[str, float]] = field(default_factory=list)

    @property
    def shifted(self) -> bool:
        """The batch differs from the reference at level ``alpha``."""
        return self.p_value < self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "distinct": self.distinct,
            "shifted": self.shifted,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "mmd2": self.mmd2,
            "z": self.z,
            "reference_images": [int(m["reference_images"]) for m in self.members],
            "members": self.members,
        }


def shift_test(
    references: Sequence[ShiftReference],
    features: np.ndarray,
    alpha: float = SHIFT_ALPHA,
    permutations: int = SHIFT_PERMUTATIONS,
    seed: int = 0,
    groups: Sequence[int] | None = None,
) -> ShiftResult:
    """Test a batch's pooled features, (m, D) for one model or (m, M, D) for an ensemble of
    M members (each member's own features), against the model's references; with ``groups``
    (one id per image, e.g. its group of near copies), one image per group."""
    features = as_members(np.asarray(features, dtype=np.float64))
    require_references(references)
    images = len(features)
    features = features[one_per_group(groups, images)]
    if len(features) < 2 <= images:
        raise ConfigError(
            f"shift test: the {images} images are near copies of {len(features)}; it needs "
            "2 or more distinct images."
        )
    if features.shape[1] != len(references):
        raise ConfigError(
            f"shift test: features of {features.shape[1]} members for {len(references)} references."
        )
    members = []
    for k, ref in enumerate(references):
        test = mmd_test(ref.sample, ref.project(features[:, k]), permutations, seed)
        members.append({**test, "reference_images": ref.size})
    p = min(1.0, len(members) * min(t["p_value"] for t in members))  # Bonferroni
    return ShiftResult(
        images=images,
        distinct=len(features),
        p_value=p,
        mmd2=float(np.mean([t["mmd2"] for t in members])),
        z=float(np.mean([t["z"] for t in members])),
        alpha=alpha,
        members=members,
    )


def require_references(
    references: Sequence[ShiftReference], name: str = "this model"
) -> list[ShiftReference]:
    """``references`` (one per member), or one line saying how a model gets them."""
    if not references:
        raise ConfigError(
            f"{name}: no reference sample for the shift test (trained before it existed, or "
            "with shift.dims=null); fit one with medmtl-calibrate <run or sweep folder>, then "
            "export again."
        )
    return list(references)


def as_members(features: np.ndarray) -> np.ndarray:
    """Pooled features as (n, M, D): a single model's (n, D) get M = 1."""
    features = np.asarray(features)
    return features[:, None, :] if features.ndim == 2 else features


def shift_record(references: Sequence[ShiftReference]) -> dict[str, Any]:
    """What a model card says about the shift test: whether the model has references, their
    sizes and dimensions, and the test's level."""
    return {
        "fitted": bool(references),
        "reference_images": [r.size for r in references],
        "dims": [int(r.components.shape[0]) for r in references],
        "alpha": SHIFT_ALPHA,
    }


def references_from_record(record: Sequence[Mapping[str, Any]] | None) -> list[ShiftReference]:
    """The references an export's metadata lists (none: an export without them)."""
    return [ShiftReference.from_dict(r) for r in record or []]

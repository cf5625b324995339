"""Split-conformal answer sets of classes with a coverage guarantee (with crepes).

From calibration images the model never trained on (its validation split), the non-conformity
of each true class, ``1 − p(true class)`` of the calibrated probabilities, is kept. A new image's
answer set holds every class whose non-conformity is no larger than a ``1 − α`` share of the
kept ones (the conformal p-value is above ``α``), so the true class is in the set for at least
``1 − α`` of exchangeable images. ``by_class=True`` (Mondrian, label-conditional) compares each
candidate class with the calibration images of that class only, so every class, malignant
included, gets its own ``1 − α`` coverage; a class without calibration images is always in
the set. The p-values are crepes' (``ConformalClassifier``, not smoothed, so the sets are
deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medmtl.errors import ConfigError
from medmtl.settings.train import ALPHA, Conformal, check_alpha


def crepes() -> None:
    """Import crepes without its import-time ``warnings.simplefilter("always", UserWarning)``,
    which would undo every warning filter of the process (medmtl's and the user's)."""
    import sys
    import warnings

    if "crepes.extras" not in sys.modules:
        with warnings.catch_warnings():
            import crepes.base  # noqa: F401
            import crepes.extras  # noqa: F401


def nonconformity(prob: np.ndarray) -> np.ndarray:
    """(n, C) non-conformity of every class of every image: ``1 − p`` (crepes' hinge)."""
    crepes()
    from crepes.extras import hinge

    return hinge(np.asarray(prob, dtype=np.float64))


@dataclass
class AnswerSets:
    """The calibration of conformal answer sets: what a model stores and applies."""

    scores: np.ndarray  # (m,) non-conformity of each calibration image's true class
    labels: np.ndarray  # (m,) its true class index
    num_classes: int
    alpha: float = ALPHA
    by_class: bool = False

    @classmethod
    def fit(
        cls, prob: np.ndarray, label: np.ndarray, alpha: float = ALPHA, by_class: bool = False
    ) -> AnswerSets:
        """From calibrated class probabilities ``prob`` (m, C) of images with labels ``label``."""
        prob, label = np.asarray(prob, dtype=np.float64), np.asarray(label, dtype=np.int64)
        scores = nonconformity(prob)[np.arange(len(label)), label]
        return cls(scores, label, prob.shape[1], check_alpha(alpha), bool(by_class))

    def predict(self, prob: np.ndarray) -> np.ndarray:
        """(n, C) booleans: which classes are in each image's answer set."""
        crepes()
        from crepes import ConformalClassifier

        prob = np.asarray(prob, dtype=np.float64)
        if prob.shape[1] != self.num_classes:
            raise ConfigError(
                f"answer sets calibrated for {self.num_classes} classes, given {prob.shape[1]}."
            )
        alphas = nonconformity(prob)
        confidence = 1 - self.alpha
        if len(self.scores) == 0:  # nothing to calibrate on: every class stays possible
            return np.ones(prob.shape, dtype=bool)
        cc = ConformalClassifier()
        if not self.by_class:
            cc.fit(self.scores)
            return cc.predict_set(alphas, confidence=confidence, smoothing=False).astype(bool)
        cc.fit(self.scores, bins=self.labels)
        out = np.zeros(prob.shape, dtype=bool)
        for c in range(self.num_classes):
            bins = np.full(len(prob), c)
            out[:, c] = cc.predict_set(alphas, bins=bins, confidence=confidence, smoothing=False)[
                :, c
            ].astype(bool)
        return out

    def with_settings(self, alpha: float | None = None, by_class: bool | None = None) -> AnswerSets:
        """The same calibration images at another error rate or class-conditional choice."""
        return AnswerSets(
            self.scores,
            self.labels,
            self.num_classes,
            self.alpha if alpha is None else check_alpha(alpha),
            self.by_class if by_class is None else bool(by_class),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (a checkpoint loads them with ``weights_only=True``)."""
        return {
            "scores": [float(s) for s in self.scores],
            "labels": [int(v) for v in self.labels],
            "num_classes": int(self.num_classes),
            "alpha": float(self.alpha),
            "by_class": bool(self.by_class),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> AnswerSets | None:
        if not d:
            return None
        return cls(
            np.asarray(d["scores"], dtype=np.float64),
            np.asarray(d["labels"], dtype=np.int64),
            int(d["num_classes"]),
            float(d.get("alpha", Conformal.alpha)),
            bool(d.get("by_class", Conformal.by_class)),
        )


def fit_calibration(
    logits: np.ndarray, label: np.ndarray, alpha: float | None = ALPHA, by_class: bool = False
) -> tuple[float, AnswerSets | None]:
    """The temperature fitted on labelled images' class ``logits`` and, at error rate
    ``alpha`` (None: none), the answer sets of the probabilities it gives, on the same images
    (a model's validation split, an ensemble's unseen images, a new site's held-back cases)."""
    from medmtl.models.calibration import fit_temperature, scaled_probabilities

    temperature = fit_temperature(logits, label)
    if alpha is None:
        return temperature, None
    prob = scaled_probabilities(logits, temperature)
    return temperature, AnswerSets.fit(prob, label, alpha, by_class)


def conformal_record(sets: AnswerSets | None) -> dict[str, Any]:
    """What a model card says about the answer sets: their error rate, class-conditional or
    not, and the number of calibration images (``{"fitted": False}`` without sets)."""
    if sets is None:
        return {"fitted": False}
    return {
        "fitted": True,
        "alpha": sets.alpha,
        "by_class": sets.by_class,
        "num_images": int(len(sets.scores)),
    }

"""The metric states the LightningModule updates batch by batch, with the study's names.

The definitions (Dice, IoU, the calibration error, the overall score) are
:mod:`medmtl.metrics`, shared with the per-image predictions file; docs/metrics.md describes
every metric. Segmentation metrics are per image at threshold 0.5, on the model's input grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.utilities import dim_zero_cat

from medmtl.metrics import brier, calibration, dice_iou, nll


def confusion_counts(
    logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image TP, FP, FN (float64) of thresholded predictions, and whether a lesion exists."""
    pred = torch.sigmoid(logits.detach()) >= threshold
    gt = target >= 0.5
    dims = tuple(range(1, pred.ndim))
    tp = (pred & gt).sum(dims).double()
    fp = (pred & ~gt).sum(dims).double()
    fn = (~pred & gt).sum(dims).double()
    return tp, fp, fn, gt.flatten(1).any(1)


class SegMetrics(Metric):
    """Per-image confusion counts of binary masks, reduced to the seg metrics above."""

    full_state_update = False

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold
        for name in ("tp", "fp", "fn", "has_lesion"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        tp, fp, fn, lesion = confusion_counts(logits, target, self.threshold)
        self.tp.append(tp)
        self.fp.append(fp)
        self.fn.append(fn)
        self.has_lesion.append(lesion)

    def compute(self) -> dict[str, torch.Tensor]:
        tp, fp, fn = dim_zero_cat(self.tp), dim_zero_cat(self.fp), dim_zero_cat(self.fn)
        lesion = dim_zero_cat(self.has_lesion).bool()
        dice, iou = dice_iou(tp, fp, fn)
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=tp.device)
        stp, sfp, sfn = tp.sum(), fp.sum(), fn.sum()
        empty = ~lesion
        return {
            "seg_dice": dice.mean(),
            "seg_iou": iou.mean(),
            "seg_dice_lesion": dice[lesion].mean() if lesion.any() else nan,
            "seg_iou_lesion": iou[lesion].mean() if lesion.any() else nan,
            "seg_f1": 2 * stp / (2 * stp + sfp + sfn) if (2 * stp + sfp + sfn) > 0 else nan,
            "normal_fp_rate": (tp + fp)[empty].gt(0).double().mean() if empty.any() else nan,
        }


class _ProbabilityScore(Metric):
    """A score of the whole split's class probabilities, from :mod:`medmtl.metrics`."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("prob", default=[], dist_reduce_fx="cat")
        self.add_state("label", default=[], dist_reduce_fx="cat")

    def update(self, prob: torch.Tensor, label: torch.Tensor) -> None:
        self.prob.append(prob.detach())
        self.label.append(label.detach())

    def score(self, prob: np.ndarray, label: np.ndarray) -> float:
        raise NotImplementedError

    def compute(self) -> torch.Tensor:
        prob = dim_zero_cat(self.prob).double().cpu().numpy()
        label = dim_zero_cat(self.label).cpu().numpy()
        return torch.tensor(self.score(prob, label), dtype=torch.float64)


class CalibrationError(_ProbabilityScore):
    """Expected calibration error of the top-class probability (:func:`medmtl.metrics.calibration`)."""

    def score(self, prob: np.ndarray, label: np.ndarray) -> float:
        return float(calibration(prob, label)["ece"][0])


class NegativeLogLikelihood(_ProbabilityScore):
    """Mean negative log-likelihood of the true class (:func:`medmtl.metrics.nll`)."""

    def score(self, prob: np.ndarray, label: np.ndarray) -> float:
        return float(nll(prob, label)[0])


class BrierScore(_ProbabilityScore):
    """Multi-class Brier score (:func:`medmtl.metrics.brier`)."""

    def score(self, prob: np.ndarray, label: np.ndarray) -> float:
        return float(brier(prob, label)[0])


def classification_metrics(num_classes: int) -> MetricCollection:
    """Macro-averaged scores (accuracy is the plain share of correct images)."""
    kw = {"num_classes": num_classes}
    return MetricCollection(
        {
            "cls_acc": MulticlassAccuracy(average="micro", **kw),
            "cls_f1": MulticlassF1Score(average="macro", **kw),
            "cls_precision": MulticlassPrecision(average="macro", **kw),
            "cls_recall": MulticlassRecall(average="macro", **kw),
            "cls_auc": MulticlassAUROC(average="macro", **kw),
            "cls_ece": CalibrationError(),
            "cls_nll": NegativeLogLikelihood(),
            "cls_brier": BrierScore(),
            "per_class_f1": MulticlassF1Score(average=None, **kw),
            "per_class_precision": MulticlassPrecision(average=None, **kw),
            "per_class_recall": MulticlassRecall(average=None, **kw),
            "confusion_matrix": MulticlassConfusionMatrix(**kw),
        }
    )


def flatten_results(
    prefix: str, values: dict[str, torch.Tensor], class_names: Sequence[str]
) -> dict[str, float | list]:
    """Flat ``<split>/<metric>`` keys; per-class vectors become ``<metric>_<class>`` keys."""
    out: dict[str, float | list] = {}
    for key, value in values.items():
        if key == "confusion_matrix":
            out[f"{prefix}/confusion_matrix"] = value.long().tolist()
        elif key.startswith("per_class_"):
            base = key.removeprefix("per_class_")
            for name, v in zip(class_names, value.tolist(), strict=True):
                out[f"{prefix}/cls_{base}_{name}"] = float(v)
        else:
            out[f"{prefix}/{key}"] = float(value)
    return out

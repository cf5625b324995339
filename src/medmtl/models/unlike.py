"""How unlike the training data a scan is: the Mahalanobis distance of its pooled encoder
features to the nearest training class (Lee et al., NeurIPS 2018), in units of a threshold.

After training, the deepest encoder feature map of every training image is averaged over
space (the feature the classification head pools); each class gets its mean, and all classes
share one covariance of the class-centred features, estimated with Ledoit-Wolf shrinkage
(scikit-learn) because a few hundred images do not pin down a covariance of a few hundred
dimensions. A new scan's distance is the smallest over the classes. The threshold is the
``quantile`` (default 0.95) of the distances of the validation images, which the model never
trained on, so about 95 % of in-domain scans score below 1 and "unlike the training data" is
a score above 1. The means, the whitening matrix and the threshold are buffers of the
network, so a checkpoint, an ensemble and an exported ONNX model compute the score in-graph.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from medmtl.errors import ConfigError
from medmtl.settings.train import QUANTILE, check_quantile


def pooled(feature: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) deepest encoder feature -> (B, D), averaged over space, in float32."""
    return feature.float().mean(dim=(2, 3))


class FeatureDistance(nn.Module):
    """The distance score of :func:`pooled` features; NaN until :meth:`fit` (not fitted)."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("means", torch.zeros(num_classes, num_features))
        # the Cholesky factor W of the precision matrix (P = W^T W): a distance is the length of
        # W (x - mean), a sum of squares, which stays exact where x^T P x would cancel
        self.register_buffer("whiten", torch.zeros(num_features, num_features))
        self.register_buffer("threshold", torch.full((), float("nan")))

    @property
    def fitted(self) -> bool:
        return bool(torch.isfinite(self.threshold))

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B,) Mahalanobis distance to the nearest class mean, in float32 also
        under mixed precision (bfloat16 would round the distance to a few digits)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            diff = x.float()[:, None, :] - self.means[None]
            d2 = (diff @ self.whiten.T).square().sum(-1)
            return d2.amin(dim=1).sqrt()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B,) the distance in units of the threshold (> 1: unlike training data)."""
        return self.distance(x) / self.threshold

    @torch.no_grad()
    def fit(
        self,
        train: np.ndarray,
        train_label: np.ndarray,
        val: np.ndarray,
        quantile: float = QUANTILE,
    ) -> dict[str, float]:
        """Class means and shared shrunk covariance from ``train`` (n, D) features, threshold
        from ``val`` (m, D); returns what was fitted (for metrics.json)."""
        from sklearn.covariance import LedoitWolf

        train = np.asarray(train, dtype=np.float64)
        label = np.asarray(train_label, dtype=np.int64)
        quantile = check_quantile(quantile)
        if len(train) < 2 or len(val) == 0:
            raise ConfigError(
                "the unlike-training score needs training and validation images "
                f"(got {len(train)} and {len(val)})."
            )
        present = sorted(set(label.tolist()))
        means = np.zeros(tuple(self.means.shape))
        for c in present:
            means[c] = train[label == c].mean(0)
        # a class without training images is as far as the nearest one: it gets the overall mean
        for c in set(range(len(means))) - set(present):
            means[c] = train.mean(0)
        centred = train - means[label]
        lw = LedoitWolf(assume_centered=True).fit(centred)
        self.means.copy_(torch.from_numpy(means).float())
        # P = L L^T (numpy's lower Cholesky factor), so W = L^T gives |W d|^2 = d^T P d
        self.whiten.copy_(torch.from_numpy(np.linalg.cholesky(lw.precision_).T).float())
        val_distance = self.distance(torch.from_numpy(np.asarray(val, dtype=np.float32)))
        threshold = float(np.quantile(val_distance.numpy(), quantile))
        if not (math.isfinite(threshold) and threshold > 0):
            raise ConfigError(f"the unlike-training threshold came out as {threshold}.")
        self.threshold.fill_(threshold)
        return {
            "unlike/threshold": threshold,
            "unlike/quantile": quantile,
            "unlike/shrinkage": float(lw.shrinkage_),
            "unlike/num_train": int(len(train)),
            "unlike/num_val": int(len(val)),
        }


def unlike_record(net: object) -> dict[str, object]:
    """What a model card says about the unlike-training score: fitted or not, its threshold
    (an ensemble: each member's)."""
    members = getattr(net, "members", None)
    if members is not None:
        fitted = [m.unlike.fitted for m in members]
        return {
            "fitted": all(fitted),
            "member_thresholds": [float(m.unlike.threshold) for m in members],
        }
    head = getattr(net, "unlike", None)
    if head is None or not head.fitted:
        return {"fitted": False}
    return {"fitted": True, "threshold": float(head.threshold)}

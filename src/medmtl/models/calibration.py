"""Temperature scaling of the class logits (Guo et al., ICML 2017).

One positive number ``T`` divides the class logits, so ``softmax(z / T)`` is the calibrated
probability: the arg-max class never changes, only how sure the model says it is. ``T`` is
fitted by minimising the negative log-likelihood on validation predictions; the predictions
of a model with test-time flips are the mean of the views' probabilities, and ``T`` is fitted
on exactly that mean, so the deployed probabilities are the calibrated ones.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from medmtl.metrics import nll

log = logging.getLogger(__name__)
# the search range of T; NLL(T) has one minimum, and a bound reached says the data is odd
T_BOUNDS = (0.05, 20.0)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def scaled_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Class probabilities of ``logits`` ((n, C), or (views, n, C) averaged over the views)
    divided by ``temperature``."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 2:
        z = z[None]
    return _softmax(z / float(temperature)).mean(0)


def fit_temperature(logits: np.ndarray, label: np.ndarray) -> float:
    """The temperature with the lowest NLL of ``label`` under :func:`scaled_probabilities`.

    Never worse than no scaling: if the fitted value does not lower the NLL (or there are no
    images), 1 is returned.
    """
    from scipy.optimize import minimize_scalar

    label = np.asarray(label, dtype=np.int64)
    if len(label) == 0:
        return 1.0

    def loss(log_t: float) -> float:
        return float(nll(scaled_probabilities(logits, math.exp(log_t)), label)[0])

    low, high = (math.log(b) for b in T_BOUNDS)
    best = minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    if loss(best.x) >= loss(0.0):
        return 1.0
    # flattening without end: the probabilities are no better than a guess of the labels
    # (at the lower end they separate the images perfectly, which small sets often do)
    if high - best.x < 0.01:
        log.warning(
            "calibration: the temperature fitted on %d images, %.4g, is at the top of its "
            "range (%g): the probabilities say nothing of these labels; are the labels the "
            "classes the probabilities are of?",
            len(label), math.exp(best.x), T_BOUNDS[1],
        )  # fmt: skip
    return math.exp(best.x)


def calibration_record(net: object) -> dict[str, object]:
    """What a model card and an exported model's metadata say about calibration: the
    network's temperature, or an ensemble's members' temperatures (each member is calibrated
    on its own validation fold and the ensemble averages the calibrated probabilities) and the
    ensemble's own, fitted on the members' out-of-fold probabilities."""
    members = getattr(net, "members", None)
    if members is not None:
        temps = [float(getattr(m, "temperature", 1.0)) for m in members]
        own = float(getattr(net, "temperature", 1.0))
        return {
            "method": "temperature scaling of each member, then their mean"
            + (", then the ensemble's temperature (fitted out of fold)" if own != 1.0 else ""),
            "member_temperatures": temps,
            "temperature": own,
            "calibrated": own != 1.0 or any(t != 1.0 for t in temps),
        }
    t = float(getattr(net, "temperature", 1.0))
    return {"method": "temperature scaling", "temperature": t, "calibrated": t != 1.0}


def drop_temperatures(net: object) -> None:
    """Set the temperature of a network (and of every member of an ensemble) back to 1: the
    uncalibrated model, e.g. to measure what calibration changed."""
    for m in [net, *(getattr(net, "members", None) or [])]:
        m.set_temperature(1.0)

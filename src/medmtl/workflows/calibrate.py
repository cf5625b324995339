"""Calibrating a trained model's class probabilities on its validation split.

After training, :func:`calibrate_module` fits the temperature of
:mod:`medmtl.models.calibration` on the validation images (a k-fold member: its own fold,
which it never trained on; the test split is never used to fit) and reports the NLL, Brier
score and ECE before and after, on validation and on test. The temperature is then stored
in the network (a buffer of :class:`medmtl.models.multitask.MultiTaskNet`), so the best
checkpoint, an ensemble of such members and an exported ONNX model all carry it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medmtl.data.datamodule import MedDataModule
from medmtl.metrics import brier, calibration, nll
from medmtl.models.calibration import fit_temperature, scaled_probabilities
from medmtl.models.conformal import ALPHA, AnswerSets
from medmtl.training.module import MultiTaskModule

log = logging.getLogger(__name__)


def split_logits(
    module: MultiTaskModule, dm: MedDataModule, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """The uncalibrated class logits of every image of ``split``, (views, n, C) with one view
    per image (two with ``module.tta``: the image and its mirror), and the labels."""
    net = module.net
    kept, tta = net.temperature, module.tta
    net.set_temperature(1.0)
    module.tta = False
    views: list[list[torch.Tensor]] = [[] for _ in range(2 if tta else 1)]
    labels: list[torch.Tensor] = []
    try:
        module.eval()
        with torch.no_grad():
            for batch in dm.dataloader(split):
                x = batch["image"]
                for v, view in enumerate(views):
                    view.append(module(torch.flip(x, dims=[3]) if v else x)["cls"].double())
                labels.append(batch["label"])
    finally:
        net.set_temperature(kept)
        module.tta = tta
    if not labels:
        return np.zeros((len(views), 0, len(module.class_names))), np.zeros(0, dtype=np.int64)
    logits = np.stack([torch.cat(v).numpy() for v in views])
    return logits, torch.cat(labels).numpy().astype(np.int64)


def _scores(prob: np.ndarray, label: np.ndarray) -> dict[str, float]:
    if len(label) == 0:
        return {"nll": float("nan"), "brier": float("nan"), "ece": float("nan")}
    return {
        "nll": float(nll(prob, label)[0]),
        "brier": float(brier(prob, label)[0]),
        "ece": float(calibration(prob, label)["ece"][0]),
    }


def calibrate_module(
    module: MultiTaskModule,
    dm: MedDataModule,
    report: Sequence[str] = ("test",),
    alpha: float = ALPHA,
    by_class: bool = False,
) -> dict[str, Any]:
    """Fit the temperature on the validation split, set it in ``module.net`` and return the
    ``calibration/...`` entries of ``metrics.json``: the temperature, the number of images it
    was fitted on, and NLL / Brier / ECE before and after on validation and on ``report``.
    The conformal answer sets (error rate ``alpha``) are calibrated on the same validation
    images, from the calibrated probabilities, and set as ``module.answer_sets``.

    A model without a classification head, or without validation images, is left at 1.
    """
    if module.net.cls_head is None:
        return {}
    logits, label = split_logits(module, dm, "val")
    temperature = fit_temperature(logits, label)
    if len(label) == 0:
        log.warning("calibration: no validation images, so the temperature stays 1.")
    module.net.set_temperature(temperature)
    module.answer_sets = AnswerSets.fit(
        scaled_probabilities(logits, temperature), label, alpha, by_class
    )
    out: dict[str, Any] = {
        "calibration/temperature": temperature,
        "calibration/fitted_on": "val",
        "calibration/num_images": int(len(label)),
    }
    for split, (z, y) in [("val", (logits, label))] + [
        (s, split_logits(module, dm, s)) for s in report
    ]:
        for when, t in (("before", 1.0), ("after", temperature)):
            for name, value in _scores(scaled_probabilities(z, t), y).items():
                out[f"calibration/{split}_{name}_{when}"] = value
    log.info(
        "calibration: temperature %.3f fitted on %d validation images (val NLL %.4f -> %.4f, "
        "ECE %.4f -> %.4f)", temperature, len(label), out["calibration/val_nll_before"],
        out["calibration/val_nll_after"], out["calibration/val_ece_before"],
        out["calibration/val_ece_after"],
    )  # fmt: skip
    return out

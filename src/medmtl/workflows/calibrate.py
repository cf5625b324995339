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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmtl.data.datamodule import CasesDataModule
from medmtl.metrics import brier, calibration, nll
from medmtl.models.calibration import scaled_probabilities
from medmtl.models.checkpoint import store_calibration
from medmtl.models.conformal import fit_calibration
from medmtl.models.multitask import SHIFT_BUFFERS
from medmtl.models.shift import ShiftReference
from medmtl.settings.train import ALPHA, QUANTILE, SHIFT_DIMS
from medmtl.training.module import MultiTaskModule

log = logging.getLogger(__name__)


def split_logits(
    module: MultiTaskModule, dm: CasesDataModule, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """The uncalibrated class logits of every image of ``split``, (views, n, C) with one view
    per image (two with ``module.tta``: the image and its mirror), and the labels."""
    net = module.net
    kept, tta = net.temperature, module.tta
    net.set_temperature(1.0)
    module.configure_evaluation(tta=False)
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
        module.configure_evaluation(tta=tta)
    if not labels:
        return np.zeros((len(views), 0, len(module.class_names))), np.zeros(0, dtype=np.int64)
    logits = np.stack([torch.cat(v).numpy() for v in views])
    return logits, torch.cat(labels).numpy().astype(np.int64)


def split_features(
    module: MultiTaskModule, dm: CasesDataModule, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """The pooled deepest encoder feature (:func:`medmtl.models.unlike.pooled`) of every image
    of ``split`` without augmentation, (n, D) (an ensemble: each member's, (n, M, D)), and the
    labels."""
    net = module.net
    members = getattr(net, "members", None)
    nets = list(members) if members is not None else [net]
    features: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    module.eval()
    with torch.no_grad():
        for batch in dm.dataloader(split):
            x = batch["image"]
            features.append(torch.stack([m.pooled_features(x) for m in nets], dim=1).double())
            labels.append(batch["label"])
    dims = nets[0].unlike.means.shape[1]
    if not labels:
        empty = (0, len(nets), dims) if members is not None else (0, dims)
        return np.zeros(empty), np.zeros(0, dtype=np.int64)
    stacked = torch.cat(features).numpy()
    label = torch.cat(labels).numpy().astype(np.int64)
    return (stacked if members is not None else stacked[:, 0]), label


def fit_feature_scores(
    module: MultiTaskModule,
    dm: CasesDataModule,
    quantile: float | None = QUANTILE,
    shift_dims: int | None = SHIFT_DIMS,
) -> dict[str, Any]:
    """Fit what the pooled encoder features of ``module.net`` give, from one pass over the
    training and validation images: the unlike-training score (:mod:`medmtl.models.unlike`;
    class means and covariance on training, threshold on validation; ``quantile`` None: not)
    and the shift test's reference (:mod:`medmtl.models.shift`; projection on training,
    reference sample of validation, one image per group of the split; ``shift_dims`` None:
    not). Returns the ``unlike/...``
    and ``shift/...`` entries of ``metrics.json`` (nothing without validation images)."""
    if quantile is None and shift_dims is None:
        return {}
    train, label = split_features(module, dm, "train")
    val, _ = split_features(module, dm, "val")
    out: dict[str, Any] = {}
    if quantile is not None and (len(val) == 0 or len(train) < 2):
        log.warning("unlike-training score: no validation or training images, so none is fitted.")
    elif quantile is not None:
        out.update(module.net.unlike.fit(train, label, val, quantile))
        log.info(
            "unlike-training score: fitted on %d training images, threshold %.3f (%.0f %% of %d "
            "validation images below it)", len(train), out["unlike/threshold"], 100 * quantile,
            len(val),
        )  # fmt: skip
    if shift_dims is not None and (len(val) < 2 or len(train) < 2):
        log.warning("shift test: fewer than 2 validation or training images, so no reference.")
    elif shift_dims is not None:
        ref = ShiftReference.fit(train, val, shift_dims, groups=dm.split_groups("val"))
        module.net.set_shift_reference(ref)
        out.update({"shift/dims": int(ref.components.shape[0]), "shift/num_train": len(train),
                    "shift/num_reference": ref.size})  # fmt: skip
        log.info(
            "shift test: reference of %d validation images (one per group of %d) on %d "
            "principal components of %d training images", ref.size, len(val),
            ref.components.shape[0], len(train),
        )  # fmt: skip
    return out


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
    dm: CasesDataModule,
    report: Sequence[str] = ("test",),
    alpha: float = ALPHA,
    by_class: bool = False,
    unlike_quantile: float | None = QUANTILE,
    shift_dims: int | None = SHIFT_DIMS,
) -> dict[str, Any]:
    """Fit the temperature on the validation split, set it in ``module.net`` and return the
    ``calibration/...`` entries of ``metrics.json``: the temperature, the number of images it
    was fitted on, and NLL / Brier / ECE before and after on validation and on ``report``.
    The conformal answer sets (error rate ``alpha``) are calibrated on the same validation
    images, from the calibrated probabilities, and set as ``module.answer_sets``.

    With ``unlike_quantile`` and ``shift_dims`` (None: not), the unlike-training score and
    the shift test's reference are fitted too (:func:`fit_feature_scores`).

    A model without a classification head, or without validation images, is left at 1.
    """
    unlike = fit_feature_scores(module, dm, unlike_quantile, shift_dims)
    if module.net.cls_head is None:
        return unlike
    logits, label = split_logits(module, dm, "val")
    temperature, sets = fit_calibration(logits, label, alpha, by_class)
    if len(label) == 0:
        log.warning("calibration: no validation images, so the temperature stays 1.")
    module.net.set_temperature(temperature)
    module.configure_evaluation(answer_sets=sets)
    out: dict[str, Any] = {
        **unlike,
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


def save_calibration(ckpt_path: str | Path, module: MultiTaskModule) -> None:
    """Store what :func:`calibrate_module` fitted into ``module`` (temperature, answer sets,
    unlike-training score, shift reference) in the checkpoint ``ckpt_path``, atomically."""
    net = module.net
    sets = module.answer_sets.to_dict() if module.answer_sets is not None else None
    buffers = (
        {f"unlike.{k}": v for k, v in net.unlike.state_dict().items()} if net.unlike.fitted else {}
    )
    if net.shift_reference() is not None:
        buffers.update({name: getattr(net, name) for name in SHIFT_BUFFERS})
    store_calibration(ckpt_path, net.temperature, sets, buffers)


def recalibrate(
    paths: Sequence[str | Path],
    alpha: float | None = None,
    by_class: bool | None = None,
    unlike_quantile: float | None = QUANTILE,
    data_root: str | None = None,
    shift_dims: int | None = SHIFT_DIMS,
) -> list[dict[str, Any]]:
    """Calibrate trained runs again, or for the first time (checkpoints written before a part
    existed): for every run folder (or every run of a sweep folder), fit the temperature, the
    conformal answer sets, the unlike-training score and the shift test's reference on its
    own validation split, exactly
    as training does, store them in its best checkpoint (atomically) and write
    ``calibration.json`` beside ``metrics.json``. ``alpha`` / ``by_class`` None: the run's own
    settings (or the defaults). Returns each run's record."""
    from medmtl.data.build import datamodule_from_config
    from medmtl.reporting.summary import write_json
    from medmtl.settings.train import check_alpha, check_quantile
    from medmtl.workflows.members import best_checkpoint, find_members, open_model

    if unlike_quantile is not None:
        check_quantile(unlike_quantile, "unlike_quantile")
    records = []
    for run in find_members(paths):
        ckpt_path = best_checkpoint(run)
        opened = open_model(ckpt_path)
        module = opened.module
        # the views its own evaluation used (with test-time flip: both), as training fitted on
        module.configure_evaluation(tta=opened.tta)
        sets = module.answer_sets
        a = alpha if alpha is not None else (sets.alpha if sets else ALPHA)
        b = by_class if by_class is not None else (sets.by_class if sets else False)
        a = check_alpha(a, "alpha")
        data = dict(opened.data)
        if data_root:
            data["root"] = data_root
        dm = datamodule_from_config(data)
        dm.prepare_data()
        dm.setup("fit")
        record = calibrate_module(
            module,
            dm,
            report=(),
            alpha=a,
            by_class=bool(b),
            unlike_quantile=unlike_quantile,
            shift_dims=shift_dims,
        )
        save_calibration(ckpt_path, module)
        record = {"ckpt_path": str(ckpt_path), **record}
        write_json(run / "calibration.json", record)
        log.info("%s: calibrated again (%s)", ckpt_path, ", ".join(
            f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float)
        ))  # fmt: skip
        records.append(record)
    return records

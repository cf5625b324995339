"""Choosing the classification gate's thresholds on out-of-fold validation predictions.

The plain gate empties the mask of every image whose arg-max class is ``normal``; a lesion
image the classifier wrongly calls normal then loses a mask that was often right. The gate of
:func:`medmtl.models.multitask.gate_masks` acts only when P(normal) is at least
``empty_mask_min_prob`` and never when the mask's own maximum probability reaches
``empty_mask_keep_above``. :func:`tune_gate` picks the pair that maximises the all-image Dice
(an empty mask on a normal image scores 1, on a lesion image 0) over the members' own
validation folds: every image is predicted by the member that never trained on it, and the
test split is never looked at.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmtl.data.build import datamodule_from_config
from medmtl.errors import ConfigError
from medmtl.metrics import dice_iou
from medmtl.training.metrics import confusion_counts
from medmtl.training.module import MultiTaskModule
from medmtl.workflows.members import best_checkpoint

log = logging.getLogger(__name__)
# the candidates: P(normal) floors (0: the arg-max rule) and mask-maximum ceilings (None: off)
MIN_PROBS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
KEEP_ABOVE = (None, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass
class GateEvidence:
    """Per image of the out-of-fold validation predictions, with the gate off."""

    p_gate: np.ndarray  # probability of the gate's class (normal)
    called: np.ndarray  # the arg-max is the gate's class
    mask_max: np.ndarray  # the mask's maximum probability
    dice: np.ndarray  # Dice of the (post-processed) mask; 1 for empty vs empty
    lesion: np.ndarray  # the image has a lesion
    # every class probability and the true class (the conformal answer sets' calibration)
    prob: np.ndarray | None = None
    label: np.ndarray | None = None

    def score(self, min_prob: float, keep_above: float | None) -> dict[str, float]:
        """All-image and lesion Dice, empty lesion masks and normal false positives of one gate."""
        gated = self.called & (self.p_gate >= min_prob)
        if keep_above is not None:
            gated &= self.mask_max < keep_above
        dice = np.where(gated, np.where(self.lesion, 0.0, 1.0), self.dice)
        # an ungated mask is empty where the (post-processed) mask had no pixel: dice 0 on a
        # lesion image whose mask is empty, dice 1 on a normal image with no pixel
        empty_lesion = self.lesion & (gated | (self.mask_max < 0.5))
        normal = ~self.lesion
        return {
            "seg_dice": float(dice.mean()),
            "seg_dice_lesion": float(dice[self.lesion].mean()) if self.lesion.any() else np.nan,
            "empty_lesion_rate": float(empty_lesion[self.lesion].mean())
            if self.lesion.any()
            else np.nan,
            "normal_fp_rate": float((dice[normal] < 1).mean()) if normal.any() else np.nan,
        }


def gate_evidence(
    runs: Sequence[Path], tta: bool = False, channels_last: bool = True, for_gate: bool = True
) -> GateEvidence:
    """Each member on its own validation split (a k-fold member: its fold, which no other
    split of it trained on), gate off: what :func:`tune_gate` needs (``for_gate``: checked to
    be multi-task models with a gate) and the conformal answer sets (class probabilities)."""
    parts: list[dict[str, np.ndarray]] = []
    for run in runs:
        module, ckpt = MultiTaskModule.from_checkpoint(best_checkpoint(run))
        data = dict(ckpt["hyper_parameters"]["data"])
        gated = module.task == "multitask" and module.net.empty_mask_index is not None
        if for_gate and not gated:
            raise ConfigError(
                f"{run}: gate=tune needs multi-task models with a gate (model.empty_mask_class)."
            )
        if module.task == "seg":
            raise ConfigError(
                f"{run}: a segmentation-only model has no class answers to calibrate."
            )
        index = module.net.empty_mask_index if gated else 0
        module.net.empty_mask_index = None
        module.tta = tta
        module.use_channels_last(channels_last)
        module.eval()
        dm = datamodule_from_config(data)
        dm.setup()
        keys = ("p", "called", "max", "dice", "lesion", "prob", "label")
        part: dict[str, list] = {k: [] for k in keys}
        with torch.no_grad():
            for batch in dm.dataloader("val"):
                out = module(batch["image"])
                prob = torch.softmax(out["cls"].double(), dim=1)
                part["p"].append(prob[:, index])
                part["called"].append(prob.argmax(1) == index)
                part["prob"].append(prob)
                part["label"].append(batch["label"])
                seg = out["seg"]
                if seg is None:  # a classification-only member: nothing for the gate
                    part["lesion"].append(batch["label"] < 0)
                    part["max"].append(torch.zeros(len(prob), dtype=torch.float64))
                    part["dice"].append(torch.zeros(len(prob), dtype=torch.float64))
                    continue
                mask_max = torch.sigmoid(seg).amax(dim=(1, 2, 3))
                if module.postprocess.active:
                    seg = module._postprocessed(seg)
                tp, fp, fn, lesion = confusion_counts(seg, batch["mask"])
                part["max"].append(mask_max)
                part["dice"].append(dice_iou(tp, fp, fn)[0])
                part["lesion"].append(lesion)
        parts.append({k: torch.cat(v).numpy() for k, v in part.items()})
        log.info("%s: %d validation images", run, len(parts[-1]["p"]))
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return GateEvidence(
        p_gate=cat["p"].astype(np.float64),
        called=cat["called"].astype(bool),
        mask_max=cat["max"].astype(np.float64),
        dice=cat["dice"].astype(np.float64),
        lesion=cat["lesion"].astype(bool),
        prob=cat["prob"].astype(np.float64),
        label=cat["label"].astype(np.int64),
    )


def tune_gate(evidence: GateEvidence) -> dict[str, Any]:
    """The gate thresholds with the best out-of-fold all-image Dice (ties: the plainer gate),
    with the plain gate's scores and every candidate's, for the record."""
    rows = []
    for min_prob in MIN_PROBS:
        for keep_above in KEEP_ABOVE:
            rows.append({"min_prob": min_prob, "keep_above": keep_above,
                         **evidence.score(min_prob, keep_above)})  # fmt: skip
    # the first best in candidate order: plain settings come first
    best = max(rows, key=lambda r: round(r["seg_dice"], 9))
    return {
        "empty_mask_min_prob": best["min_prob"],
        "empty_mask_keep_above": best["keep_above"],
        "chosen": best,
        "plain": rows[0],
        "num_images": int(len(evidence.dice)),
        "candidates": rows,
    }

"""Choosing the classification gate's thresholds on out-of-fold validation predictions.

The plain gate empties the mask of every image whose arg-max class is ``normal``; a lesion
image the classifier wrongly calls normal then loses a mask that was often right. The gate of
:func:`medmtl.models.multitask.gate_masks` acts only when P(normal) is at least
``empty_mask_min_prob`` and never when the mask's own maximum probability reaches
``empty_mask_keep_above``. :func:`tune_gate` picks the pair that maximises the all-image Dice
(an empty mask on a normal image scores 1, on a lesion image 0) over the members' own
validation folds: every image is predicted by the member that never trained on it, and the
test split is never looked at. The mask threshold (``mask_threshold``: where a pixel of the
averaged probability map counts as lesion) is chosen with them, from :data:`MASK_THRESHOLDS`.
A candidate that leaves more lesion images empty than the plain setting (arg-max gate, 0.5)
is not eligible: the all-image Dice weighs a missed lesion like a false mask on a normal image,
and a threshold raised to clean up normal images out of fold cost lesions on another scanner,
which has no normal images to gain from it (docs/results.md, issue 21).

For a screening aid the operating point is chosen for finding lesions instead
(``target_sensitivity``): the lowest out-of-fold normal false-positive rate among the settings
whose lesion sensitivity (lesions found, :func:`medmtl.metrics.match_lesions`) reaches the
target; the trade-off between the two is drawn in ``figures/gate_tradeoff.png``.
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
from medmtl.metrics import LESION_FOUND_IOU, dice_iou, mask_agreement, match_lesions
from medmtl.models.multitask import threshold_shift
from medmtl.training.metrics import confusion_counts
from medmtl.training.module import MultiTaskModule
from medmtl.workflows.members import best_checkpoint

log = logging.getLogger(__name__)
# the candidates: P(normal) floors (0: the arg-max rule) and mask-maximum ceilings (None: off)
MIN_PROBS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
KEEP_ABOVE = (None, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# mask thresholds, the usual 0.5 first (ties keep it); the lowest ones for a sensitivity target
MASK_THRESHOLDS = (0.5, 0.4, 0.3, 0.2, 0.6, 0.7, 0.15, 0.1)


@dataclass
class GateEvidence:
    """Per image of the out-of-fold validation predictions, with the gate off."""

    p_gate: np.ndarray  # probability of the gate's class (normal)
    called: np.ndarray  # the arg-max is the gate's class
    mask_max: np.ndarray  # the mask's maximum probability
    # (images, thresholds): Dice of the (post-processed) mask at each of ``thresholds``, 1 for
    # empty vs empty, and whether that mask is empty
    dice: np.ndarray
    empty: np.ndarray
    lesion: np.ndarray  # the image has a lesion
    thresholds: tuple[float, ...] = MASK_THRESHOLDS
    # every class probability and the true class (the conformal answer sets' calibration)
    prob: np.ndarray | None = None
    label: np.ndarray | None = None
    # each image's lesions, and (images, thresholds) how many of them its mask finds
    lesions: np.ndarray | None = None
    found: np.ndarray | None = None
    # the ensemble's members' mask agreement (metrics.mask_agreement) on each image
    mask_agreement: np.ndarray | None = None

    def score(
        self, min_prob: float, keep_above: float | None, threshold: float = 0.5
    ) -> dict[str, float]:
        """All-image and lesion Dice, empty lesion masks and normal false positives of one gate
        and mask threshold (one of :attr:`thresholds`)."""
        j = self.thresholds.index(threshold)
        gated = self.called & (self.p_gate >= min_prob)
        if keep_above is not None:  # the gate sees the map recentred on the threshold
            gated &= _recentred(self.mask_max, threshold) < keep_above
        dice = np.where(gated, np.where(self.lesion, 0.0, 1.0), self.dice[:, j])
        empty_lesion = self.lesion & (gated | self.empty[:, j])
        normal = ~self.lesion
        out = {
            "seg_dice": float(dice.mean()),
            "seg_dice_lesion": float(dice[self.lesion].mean()) if self.lesion.any() else np.nan,
            "empty_lesion_rate": float(empty_lesion[self.lesion].mean())
            if self.lesion.any()
            else np.nan,
            "normal_fp_rate": float((dice[normal] < 1).mean()) if normal.any() else np.nan,
        }
        if self.found is not None and self.lesions is not None:
            total = float(self.lesions.sum())
            found = np.where(gated, 0.0, self.found[:, j]).sum()
            out["lesion_sensitivity"] = float(found / total) if total else np.nan
        return out


def _recentred(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Mask probabilities as the network outputs them with ``mask_threshold=threshold``."""
    p = np.clip(prob, 1e-12, 1 - 1e-12)
    return 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) - threshold_shift(threshold))))


def _at_threshold(out: dict[str, Any], threshold: float) -> torch.Tensor:
    """The mask logits a network with ``mask_threshold=threshold`` would give: with test-time
    flip each view is recentred before the views are averaged, as in evaluation."""
    shift = threshold_shift(threshold)
    views = out.get("view_seg")
    if views is None:
        return out["seg"] - shift
    recentred = torch.sigmoid(torch.logit(views.double(), eps=1e-7) - shift).mean(0)
    return torch.logit(recentred, eps=1e-7)


def gate_evidence(
    runs: Sequence[Path],
    tta: bool = False,
    channels_last: bool = True,
    for_gate: bool = True,
    ensemble_net: torch.nn.Module | None = None,
) -> GateEvidence:
    """Each member on its own validation split (a k-fold member: its fold, which no other
    split of it trained on), gate off: what :func:`tune_gate` needs (``for_gate``: checked to
    be multi-task models with a gate) and the conformal answer sets (class probabilities).
    With ``ensemble_net`` (an :class:`~medmtl.models.ensemble.EnsembleNet` of the members),
    also the members' mask agreement on the same images."""
    parts: list[dict[str, np.ndarray]] = []
    if ensemble_net is not None:
        ensemble_net.eval()
    for run in runs:
        module, ckpt = MultiTaskModule.from_checkpoint(best_checkpoint(run))
        data = dict(ckpt["hyper_parameters"]["data"])
        gated = module.task == "multitask" and module.net.gate.empty_mask_index is not None
        if for_gate and not gated:
            raise ConfigError(
                f"{run}: gate=tune needs multi-task models with a gate (model.empty_mask_class)."
            )
        if module.task == "seg":
            raise ConfigError(
                f"{run}: a segmentation-only model has no class answers to calibrate."
            )
        index = module.net.gate.empty_mask_index if gated else 0
        # the map itself, ungated: every threshold is applied below
        module.configure_evaluation(tta=tta, gate={"empty_mask_index": None, "mask_threshold": 0.5})
        module.use_channels_last(channels_last)
        module.eval()
        dm = datamodule_from_config(data)
        dm.setup()
        keys = ("p", "called", "max", "dice", "empty", "lesion", "prob", "label", "lesions",
                "found", "agreement")  # fmt: skip
        part: dict[str, list] = {k: [] for k in keys}
        with torch.no_grad():
            for batch in dm.dataloader("val"):
                out = module(batch["image"])
                if ensemble_net is not None:
                    members = ensemble_net(batch["image"]).get("member_seg")
                    agree = np.ones(len(batch["image"])) if members is None else mask_agreement(
                        members.float().numpy()
                    )  # fmt: skip
                    part["agreement"].append(torch.from_numpy(np.asarray(agree, np.float64)))
                prob = torch.softmax(out["cls"].double(), dim=1)
                part["p"].append(prob[:, index])
                part["called"].append(prob.argmax(1) == index)
                part["prob"].append(prob)
                part["label"].append(batch["label"])
                seg = out["seg"]
                if seg is None:  # a classification-only member: nothing for the gate
                    part["lesion"].append(batch["label"] < 0)
                    part["max"].append(torch.zeros(len(prob), dtype=torch.float64))
                    zeros = torch.zeros(len(prob), len(MASK_THRESHOLDS), dtype=torch.float64)
                    part["dice"].append(zeros)
                    part["empty"].append(zeros.bool())
                    part["found"].append(zeros)
                    part["lesions"].append(zeros[:, 0])
                    continue
                part["max"].append(torch.sigmoid(seg).amax(dim=(1, 2, 3)))
                truth = batch.get("lesions", batch["mask"] >= 0.5).numpy()[:, 0]
                dice, empty, found = [], [], []
                for threshold in MASK_THRESHOLDS:
                    at = _at_threshold(out, threshold)
                    if module.postprocess.active:
                        at = module._postprocessed(at)
                    tp, fp, fn, lesion = confusion_counts(at, batch["mask"])
                    dice.append(dice_iou(tp, fp, fn)[0])
                    empty.append(tp + fp == 0)
                    hits, lesions = _lesions_found(truth, (at >= 0).numpy()[:, 0])
                    found.append(hits)
                part["dice"].append(torch.stack(dice, dim=1))
                part["empty"].append(torch.stack(empty, dim=1))
                part["found"].append(torch.stack(found, dim=1))
                part["lesions"].append(lesions)  # the same at every threshold
                part["lesion"].append(lesion)
        parts.append({k: torch.cat(v).numpy() if v else np.zeros(0) for k, v in part.items()})
        log.info("%s: %d validation images", run, len(parts[-1]["p"]))
    parts = [{k: v for k, v in p.items() if len(v)} for p in parts]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return GateEvidence(
        p_gate=cat["p"].astype(np.float64),
        called=cat["called"].astype(bool),
        mask_max=cat["max"].astype(np.float64),
        dice=cat["dice"].astype(np.float64),
        empty=cat["empty"].astype(bool),
        lesion=cat["lesion"].astype(bool),
        prob=cat["prob"].astype(np.float64),
        label=cat["label"].astype(np.int64),
        lesions=cat["lesions"].astype(np.float64),
        found=cat["found"].astype(np.float64),
        mask_agreement=cat["agreement"].astype(np.float64) if "agreement" in cat else None,
    )


def _lesions_found(truth: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,) how many of each image's lesions (instance labels) its mask finds, and (n,) how
    many lesions it has."""
    ious = [match_lesions(t, m)[0] for t, m in zip(truth, masks, strict=True)]
    found = [float((i >= LESION_FOUND_IOU).sum()) for i in ious]
    return (torch.tensor(found, dtype=torch.float64),
            torch.tensor([float(len(i)) for i in ious], dtype=torch.float64))  # fmt: skip


def tune_gate(evidence: GateEvidence, target_sensitivity: float | None = None) -> dict[str, Any]:
    """The gate thresholds and mask threshold chosen on the out-of-fold predictions, with the
    plain gate's scores and every candidate's, for the record (ties: the plainer setting).

    Without ``target_sensitivity``: the best all-image Dice among the settings that leave no
    more lesion images empty than the plain setting. With it: the lowest normal false-positive
    rate among the settings whose lesion sensitivity reaches it (ties: the best all-image
    Dice); when none does, the highest lesion sensitivity, and ``reached`` is False.
    """
    rows = []
    for threshold in evidence.thresholds:
        for min_prob in MIN_PROBS:
            for keep_above in KEEP_ABOVE:
                rows.append({"mask_threshold": threshold, "min_prob": min_prob,
                             "keep_above": keep_above,
                             **evidence.score(min_prob, keep_above, threshold)})  # fmt: skip
    plain = rows[0]
    extra: dict[str, Any] = {}
    if target_sensitivity is None:
        eligible = [r for r in rows if not _more_empty(r, plain)]  # the plain setting always is
        # the first best in candidate order: plain settings come first
        best = max(eligible, key=lambda r: round(r["seg_dice"], 9))
        rule = "best all-image Dice, no more lesion images left empty than the plain gate"
    else:
        if "lesion_sensitivity" not in plain:
            raise ConfigError(
                "target_sensitivity needs the lesions of the validation images; these members' "
                "evidence has none (a classification-only ensemble?)."
            )

        def sens(r: dict[str, Any]) -> float:
            return float(np.nan_to_num(round(r["lesion_sensitivity"], 9), nan=0.0))

        def fp(r: dict[str, Any]) -> float:
            return float(np.nan_to_num(round(r["normal_fp_rate"], 9), nan=0.0))

        reaching = [r for r in rows if sens(r) >= target_sensitivity - 1e-9]
        if reaching:
            best = min(reaching, key=lambda r: (fp(r), -round(r["seg_dice"], 9)))
            rule = (f"lowest normal false-positive rate whose out-of-fold lesion sensitivity "
                    f"reaches {target_sensitivity}")  # fmt: skip
        else:
            best = max(rows, key=lambda r: (sens(r), -fp(r)))
            rule = (f"no setting reaches lesion sensitivity {target_sensitivity} out of fold: "
                    "the highest one")  # fmt: skip
            log.warning(
                "No gate setting reaches lesion sensitivity %s on the %d out-of-fold images; "
                "the highest, %.4f, is used.", target_sensitivity, len(evidence.p_gate), sens(best),
            )  # fmt: skip
        extra = {"target_sensitivity": target_sensitivity, "reached": bool(reaching)}
    return {
        "empty_mask_min_prob": best["min_prob"],
        "empty_mask_keep_above": best["keep_above"],
        "mask_threshold": best["mask_threshold"],
        "rule": rule,
        **extra,
        "chosen": best,
        "plain": plain,
        "num_images": int(len(evidence.p_gate)),
        "candidates": rows,
    }


def _more_empty(row: dict[str, Any], plain: dict[str, Any]) -> bool:
    """Whether a candidate leaves more lesion images empty than the plain setting (never, when
    the validation images hold no lesion)."""
    if np.isnan(plain["empty_lesion_rate"]):
        return False
    return round(row["empty_lesion_rate"], 9) > round(plain["empty_lesion_rate"], 9)

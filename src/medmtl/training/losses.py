"""Segmentation and classification losses and how they are combined.

Combined loss (the study's convention): ``L = λ·L_seg + (1 − λ)·L_cls`` with
``λ = loss.seg_weight``; or learned homoscedastic-uncertainty weighting (Kendall et al., 2018):
``L = Σ_t exp(−s_t)·L_t + s_t`` with one learned log-variance ``s_t`` per task.
Either way ``loss.presence_weight`` adds a lesion-presence term on the mask alone
(:func:`presence_loss`), so that the segmenter is penalised for leaving a lesion image empty,
and with deep supervision (``model.deep_supervision``) ``loss.deep_supervision_weight`` adds the
mean segmentation loss of the decoder stages' masks (``seg_aux``). Knowledge distillation
(``distill.teacher``) mixes in :func:`distillation_loss` against a trained teacher's outputs.
"""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from medmtl.errors import ConfigError
from medmtl.settings.checks import choice
from medmtl.settings.loss import CLS_LOSSES, SEG_LOSSES, LossSettings


class DiceBCELoss(nn.Module):
    """Soft Dice + binary cross-entropy on logits, summed with equal weight."""

    def __init__(self) -> None:
        super().__init__()
        self.dice = smp.losses.DiceLoss(mode="binary", from_logits=True)
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, target) + self.bce(logits, target)


def build_seg_loss(s: LossSettings) -> nn.Module:
    """Binary segmentation loss on logits (smp implementations): ``s.seg``."""
    name = choice("loss.seg", s.seg, SEG_LOSSES)
    if name == "dice_bce":
        return DiceBCELoss()
    if name == "dice":
        return smp.losses.DiceLoss(mode="binary", from_logits=True)
    if name == "bce":
        return nn.BCEWithLogitsLoss()
    if name == "focal":
        return smp.losses.FocalLoss(mode="binary", gamma=s.focal_gamma)
    if name == "tversky":
        return smp.losses.TverskyLoss(
            mode="binary", from_logits=True, alpha=s.tversky_alpha, beta=s.tversky_beta
        )
    return smp.losses.LovaszLoss(mode="binary", from_logits=True)


class SoftmaxFocalLoss(nn.Module):
    """Multi-class focal loss: ``(1 − p_t)^γ · CE``, with optional class weights."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, reduction="none")
        pt = torch.exp(-ce)
        loss = (1 - pt) ** self.gamma * ce
        if self.weight is not None:
            loss = loss * self.weight[target]
        return loss.mean()


def build_cls_loss(s: LossSettings, num_classes: int) -> nn.Module:
    """Classification loss on logits (``s.cls``): cross-entropy (label smoothing, class
    weights) or focal."""
    name = choice("loss.cls", s.cls, CLS_LOSSES)
    class_weights = s.class_weights
    weight = None
    if class_weights is not None:
        if len(class_weights) != num_classes:
            raise ConfigError(
                f"loss.class_weights has {len(class_weights)} values for {num_classes} classes."
            )
        weight = torch.tensor(list(class_weights), dtype=torch.float32)
    if name == "ce":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=s.label_smoothing)
    return SoftmaxFocalLoss(gamma=s.focal_gamma, weight=weight)


def presence_loss(seg_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy between each image's highest mask logit and "has a lesion".

    A detection term (multiple-instance style): a lesion image whose mask is empty everywhere
    and a lesion-free image with any confident pixel are both penalised, whatever the overlap.
    """
    present = (mask.flatten(1).amax(1) > 0.5).to(seg_logits.dtype)
    return F.binary_cross_entropy_with_logits(seg_logits.flatten(1).amax(1), present)


def distillation_loss(
    student: dict[str, torch.Tensor | None],
    teacher: dict[str, torch.Tensor | None],
    seg_weight: float,
    temperature: float = 2.0,
) -> torch.Tensor:
    """How far the student's outputs are from the teacher's, λ-weighted like the task losses.

    Classes: KL divergence between the teacher's and the student's class probabilities, both
    softened by ``temperature`` and scaled by its square (Hinton et al., 2015). Mask: binary
    cross-entropy of the student's mask logits against the teacher's probability map (soft
    targets, pixel by pixel). A head either side lacks is left out.
    """
    parts = []
    weights = []
    if student.get("seg") is not None and teacher.get("seg") is not None:
        target = torch.sigmoid(teacher["seg"].float())
        parts.append(F.binary_cross_entropy_with_logits(student["seg"].float(), target))
        weights.append(seg_weight)
    if student.get("cls") is not None and teacher.get("cls") is not None:
        t = float(temperature)
        soft = F.log_softmax(teacher["cls"].float() / t, dim=1)
        kl = F.kl_div(
            F.log_softmax(student["cls"].float() / t, dim=1), soft, log_target=True,
            reduction="batchmean",
        )  # fmt: skip
        parts.append(kl * t * t)
        weights.append(1.0 - seg_weight)
    if not parts:
        raise ConfigError("distillation needs a head that both student and teacher have.")
    if len(parts) == 1:
        return parts[0]
    return weights[0] * parts[0] + weights[1] * parts[1]


class MultiTaskLoss(nn.Module):
    """Combines the task losses; returns the total and the parts for logging."""

    def __init__(self, task: str = "multitask", num_classes: int = 3, **settings: Any) -> None:
        """``settings``: the ``loss`` settings (:class:`~medmtl.settings.loss.LossSettings`,
        whose defaults and checks apply); ``task`` and ``num_classes`` come from the model."""
        super().__init__()
        s = LossSettings.from_dict(settings)
        self.task = task
        self.seg_weight = s.seg_weight
        self.presence_weight = s.presence_weight if task != "cls" else 0.0
        self.deep_supervision_weight = s.deep_supervision_weight
        self.weighting = s.weighting
        self.seg_loss = build_seg_loss(s) if task != "cls" else None
        self.cls_loss = build_cls_loss(s, num_classes) if task != "seg" else None
        self.log_vars = (
            nn.Parameter(torch.zeros(2))
            if s.weighting == "uncertainty" and task == "multitask"
            else None
        )

    def task_weights(self) -> dict[str, float]:
        """The learned weights exp(-s) and log-variances s of ``weighting=uncertainty`` (else {})."""
        if self.log_vars is None:
            return {}
        s = self.log_vars.detach().double().cpu()
        return {
            "task_weight_seg": float(torch.exp(-s[0])),
            "task_weight_cls": float(torch.exp(-s[1])),
            "log_var_seg": float(s[0]),
            "log_var_cls": float(s[1]),
        }

    def forward(
        self, out: dict[str, torch.Tensor | None], mask: torch.Tensor, label: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        if self.seg_loss is not None:
            parts["loss_seg"] = self.seg_loss(out["seg"], mask)
        if self.presence_weight > 0:
            parts["loss_presence"] = presence_loss(out["seg"], mask)
        aux = out.get("seg_aux")
        if aux is not None and self.deep_supervision_weight > 0:
            parts["loss_deep"] = torch.stack([self.seg_loss(a, mask) for a in aux]).mean()
        if self.cls_loss is not None:
            parts["loss_cls"] = self.cls_loss(out["cls"], label)
        if self.task == "seg":
            total = parts["loss_seg"]
        elif self.task == "cls":
            total = parts["loss_cls"]
        elif self.log_vars is not None:
            s = self.log_vars
            total = (
                torch.exp(-s[0]) * parts["loss_seg"]
                + s[0]
                + torch.exp(-s[1]) * parts["loss_cls"]
                + s[1]
            )
        else:
            total = self.seg_weight * parts["loss_seg"] + (1 - self.seg_weight) * parts["loss_cls"]
        if "loss_presence" in parts:
            total = total + self.presence_weight * parts["loss_presence"]
        if "loss_deep" in parts:
            total = total + self.deep_supervision_weight * parts["loss_deep"]
        parts["loss"] = total
        return parts

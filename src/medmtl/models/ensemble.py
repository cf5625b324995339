"""Several trained networks as one: the mean of their class and mask probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medmtl.errors import ConfigError
from medmtl.models.multitask import Gate, MultiTaskNet, Tempered, gated
from medmtl.models.shift import ShiftReference

# probabilities are turned back into logits for the rest of the pipeline; eps keeps them finite
_EPS = 1e-7


def average_outputs(
    outs: Sequence[dict[str, torch.Tensor | None]],
) -> dict[str, torch.Tensor | None]:
    """The mean of several outputs' probabilities, as logits again (ensembles and flip TTA);
    the other outputs (the unlike score, an ensemble's members' probabilities) are averaged
    as they are, except the pooled features: the first output's."""
    seg = cls = None
    if outs[0]["seg"] is not None:
        prob = torch.stack([torch.sigmoid(o["seg"]) for o in outs]).mean(0)
        seg = torch.logit(prob, eps=_EPS)
    if outs[0]["cls"] is not None:
        prob = torch.stack([torch.softmax(o["cls"], dim=1) for o in outs]).mean(0)
        cls = torch.log(prob.clamp_min(_EPS))
    out: dict[str, torch.Tensor | None] = {"seg": seg, "cls": cls}
    # the pooled features are the first output's (the image itself; an ensemble stacks its
    # members' own, EnsembleNet.forward): a mean of different encoders' features means nothing
    if "features" in outs[0]:
        out["features"] = outs[0]["features"]
    for key in outs[0].keys() - {"seg", "cls", "features"}:
        values = [o.get(key) for o in outs]
        if all(v is not None for v in values):
            out[key] = torch.stack(values).mean(0)
    return out


def mirrored_back(
    out: dict[str, torch.Tensor | None],
) -> dict[str, torch.Tensor | None]:
    """The outputs for a horizontally mirrored image on the image's own grid: every map (the
    mask (B, 1, H, W), an ensemble's members' masks (M, B, 1, H, W)) flipped back along its
    width, the last dimension."""
    return {
        k: torch.flip(v, dims=[-1]) if v is not None and v.dim() >= 4 else v for k, v in out.items()
    }


def combine_views(
    views: Sequence[dict[str, torch.Tensor | None]],
) -> dict[str, torch.Tensor | None]:
    """Several views of the same images (an image and its mirror, flipped back) as one output:
    averaged, and the views' class and mask probabilities kept as ``view_cls`` (V, B, C) and
    ``view_seg`` (V, B, 1, H, W) for their disagreement."""
    if len(views) == 1:
        return dict(views[0])
    out = average_outputs(views)
    if views[0]["cls"] is not None:
        out["view_cls"] = torch.stack([torch.softmax(v["cls"], dim=1) for v in views])
    if views[0]["seg"] is not None:
        out["view_seg"] = torch.stack([torch.sigmoid(v["seg"]) for v in views])
    return out


class EnsembleNet(Tempered, nn.Module):
    """Averages the members' class probabilities and mask probability maps (not their masks).

    ``forward`` returns logits like :class:`MultiTaskNet` (``log`` of the mean class
    probabilities, ``logit`` of the mean mask probability), so softmax/sigmoid downstream give
    back the averaged probabilities and thresholding at 0.5 thresholds the mean map. The
    classification gate (``empty_mask_index``) acts once, on the averaged class, and the mask
    threshold (``mask_threshold``) once, on the averaged map. The ensemble's own temperature
    (1 unless fitted on out-of-fold probabilities, :mod:`medmtl.workflows.ensemble`) divides
    the log of the mean class probabilities, after each member's own.
    """

    def __init__(
        self,
        members: Sequence[MultiTaskNet],
        empty_mask_index: int | None = None,
        empty_mask_min_prob: float = 0.0,
        empty_mask_keep_above: float | None = None,
        mask_threshold: float = 0.5,
    ):
        super().__init__()
        if not members:
            raise ConfigError("an ensemble needs at least one model.")
        tasks = {m.task for m in members}
        if len(tasks) != 1:
            raise ConfigError(f"ensemble members have different tasks ({sorted(tasks)}).")
        self.members = nn.ModuleList(members)
        self.register_buffer("cls_temperature", torch.ones((), dtype=torch.float32))
        # refer an image whose members' masks agree less than this (None: never; set on
        # out-of-fold data by medmtl.workflows.ensemble)
        self.min_mask_agreement: float | None = None
        for m in self.members:
            m.gate = Gate()  # gate and threshold the averaged output, not each member
        self.task = members[0].task
        self.arch = members[0].arch if len({m.arch for m in members}) == 1 else "ensemble"
        self.encoder_name = (
            members[0].encoder_name if len({m.encoder_name for m in members}) == 1 else "ensemble"
        )
        self.gate = Gate().changed(
            {
                "empty_mask_index": empty_mask_index,
                "empty_mask_min_prob": empty_mask_min_prob,
                "empty_mask_keep_above": empty_mask_keep_above,
                "mask_threshold": mask_threshold,
            },
            members[0].num_classes,
        )

    def shift_references(self) -> list[ShiftReference]:
        """Each member's shift-test reference, in member order (none unless all have one)."""
        refs = [m.shift_reference() for m in self.members]
        return [r for r in refs if r is not None] if all(r is not None for r in refs) else []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """The averaged outputs (the unlike score is the members' mean: each member's is in
        units of its own threshold), and each member's class probabilities ``member_cls``
        (M, B, C) and mask probabilities ``member_seg`` (M, B, 1, H, W) for their disagreement
        (:func:`medmtl.metrics.class_disagreement`, :func:`medmtl.metrics.mask_agreement`), and
        in eval mode their pooled features ``features`` (B, M, D) for the shift test."""
        outs = [m(x) for m in self.members]
        out = average_outputs(outs)
        if outs[0].get("features") is not None:  # (B, M, D): each member's for its own test
            out["features"] = torch.stack([o["features"] for o in outs], dim=1)
        if out["cls"] is not None and self.temperature != 1.0:
            out["cls"] = out["cls"] / self.cls_temperature
        if outs[0]["cls"] is not None:
            out["member_cls"] = torch.stack([torch.softmax(o["cls"], dim=1) for o in outs])
        if outs[0]["seg"] is not None:
            out["member_seg"] = torch.stack([torch.sigmoid(o["seg"]) for o in outs])
        out["seg"] = gated(self, out["seg"], out["cls"])
        return out

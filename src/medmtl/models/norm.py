"""Normalisation layers that carry no scanner's statistics: batch norm replaced by group or
instance norm (``model.norm``).

Batch norm keeps running means and variances of the training images; on another scanner's
images they are off (what AdaBN re-estimates at test time). Group norm (Wu & He, 2018) and
instance norm normalise each image by its own statistics, so nothing of the training scanner's
intensity statistics is stored. The pretrained affine weights are kept; the running statistics
are dropped, so a converted network needs its training to adapt (the layers' outputs differ
from the pretrained ones).
"""

from __future__ import annotations

from timm.layers.norm_act import BatchNormAct2d, GroupNormAct
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from medmtl.settings.model import NORMS

MAX_GROUPS = 32  # Wu & He's default group count


def num_groups(channels: int, kind: str) -> int:
    """Groups for ``channels``: one per channel for instance norm; else the largest divisor of
    ``channels`` up to 32 that leaves at least two channels per group (counts such as 24 or
    40 do not divide into 32, and one channel per group would be instance norm)."""
    if kind == "instance" or channels < 2:
        return channels
    return max(g for g in range(1, min(MAX_GROUPS, channels // 2) + 1) if channels % g == 0)


def _converted(bn: _BatchNorm, kind: str) -> nn.Module:
    c = bn.num_features
    if isinstance(bn, BatchNormAct2d):  # timm's norm + activation in one layer (EfficientNet)
        new: nn.Module = GroupNormAct(c, num_groups(c, kind), eps=bn.eps, affine=bn.affine)
        new.act, new.drop = bn.act, bn.drop  # the same activation module, not a default one
    else:
        new = nn.GroupNorm(num_groups(c, kind), c, eps=bn.eps, affine=bn.affine)
    if bn.affine:
        new.weight.data.copy_(bn.weight.data)
        new.bias.data.copy_(bn.bias.data)
    return new


def replace_batchnorm(net: nn.Module, kind: str) -> int:
    """Replace every 2-D batch-norm layer of ``net`` in place by group (``kind="group"``) or
    instance (``"instance"``) norm; returns how many were replaced (0 for ``"batch"``)."""
    if kind not in NORMS:  # MultiTaskNet checks model.norm first (check_model_names)
        raise ValueError(f"norm {kind!r}: one of {', '.join(NORMS)}")
    if kind == "batch":
        return 0
    replaced = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BatchNorm) and not isinstance(child, nn.BatchNorm1d):
                setattr(parent, name, _converted(child, kind))
                replaced += 1
    return replaced

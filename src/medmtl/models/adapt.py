"""Test-time adaptation without labels: batch-norm statistics of the target images (AdaBN).

A network trained on one scanner normalises every feature with that scanner's running means
and variances. AdaBN (Li et al., 2016) re-estimates them on the images to be evaluated, so
another scanner's brightness, contrast and speckle statistics are normalised away; no weight
changes and no label is used. For an ensemble each member's own statistics are re-estimated.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from medmtl.errors import ConfigError


def batchnorm_layers(net: nn.Module) -> list[_BatchNorm]:
    """Every batch-norm layer of ``net`` (timm's BatchNormAct2d included)."""
    return [m for m in net.modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def adapt_batchnorm(net: nn.Module, images: Iterable[torch.Tensor]) -> int:
    """Replace the running statistics of every batch-norm layer by those of ``images``
    (batches of model inputs), as a cumulative average over all of them; returns the number
    of images seen. Only the statistics change; dropout and everything else stay in eval mode.
    """
    layers = batchnorm_layers(net)
    if not layers:
        raise ConfigError(
            "adapt=bn: the network has no batch-norm layer to adapt (a model.norm=group or "
            "instance model normalises each image by itself); drop adapt=bn."
        )
    momentum = [m.momentum for m in layers]
    was_training = net.training
    net.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every image counts the same
        m.train()
    seen = 0
    try:
        for x in images:
            if x.shape[0] < 2:  # one image gives no variance per channel at the last levels
                continue
            net(x)
            seen += int(x.shape[0])
    finally:
        for m, mom in zip(layers, momentum, strict=True):
            m.momentum = mom
            m.eval()
        net.train(was_training)
    if seen == 0:
        raise ValueError("adapt=bn needs at least 2 images in a batch.")
    return seen

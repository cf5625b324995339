"""Grad-CAM of the classification head (pytorch-grad-cam) on the encoder's deepest feature map."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medmtl.errors import ConfigError


class _ClassLogits(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["cls"]


def deepest_feature_module(encoder: nn.Module, in_channels: int = 1, size: int = 64) -> nn.Module:
    """The module whose output is the encoder's deepest feature map (what the head pools).

    Found by running the encoder once with forward hooks, so it works for every smp/timm
    encoder without a per-encoder table.
    """
    seen: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(
            lambda mod, _i, out: seen.append((mod, out)) if isinstance(out, torch.Tensor) else None
        )
        for m in encoder.modules()
        if m is not encoder
    ]
    try:
        with torch.no_grad():
            features = encoder(torch.zeros(1, in_channels, size, size))
    finally:
        for h in hooks:
            h.remove()
    deepest = features[-1]
    matches = [m for m, out in seen if out is deepest]
    if not matches:
        raise ConfigError(
            "cannot find the encoder layer that produces the deepest feature for Grad-CAM."
        )
    return matches[-1]  # the outermost module that returns it (it finishes last)


class GradCamExplainer:
    """Callable: (batch (B,1,S,S) float32, target classes (B,)) -> heatmaps (B,S,S) in [0, 1]."""

    def __init__(self, net: nn.Module, in_channels: int = 1, size: int = 64) -> None:
        from pytorch_grad_cam import GradCAM

        if getattr(net, "cls_head", None) is None:
            raise ConfigError(
                "explain=gradcam needs a classification head; this model has task=seg."
            )
        self.model = _ClassLogits(net).eval()
        layer = deepest_feature_module(net.encoder, in_channels, size)
        self.cam = GradCAM(model=self.model, target_layers=[layer])

    def __call__(self, batch: np.ndarray, classes: np.ndarray) -> np.ndarray:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        targets = [ClassifierOutputTarget(int(c)) for c in classes]
        with torch.enable_grad():
            return self.cam(
                input_tensor=torch.from_numpy(np.ascontiguousarray(batch)), targets=targets
            )

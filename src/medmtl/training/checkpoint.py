"""Rebuilding the training module from a medmtl checkpoint (safe loading: :mod:`medmtl.models.checkpoint`)."""

from __future__ import annotations

from pathlib import Path

from medmtl.models.checkpoint import load_checkpoint

__all__ = ["load_checkpoint", "module_from_checkpoint"]


def module_from_checkpoint(path: str | Path):
    """Rebuild the MultiTaskModule from a checkpoint (no weight download) and load its weights."""
    from medmtl.training.module import MultiTaskModule

    ckpt = load_checkpoint(path)
    hp = dict(ckpt["hyper_parameters"])
    hp["model"] = {**hp["model"], "encoder_weights": None}  # the weights come from the state dict
    module = MultiTaskModule(**hp)
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    return module, ckpt

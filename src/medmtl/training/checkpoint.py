"""Loading medmtl checkpoints safely (``weights_only=True``: nothing is unpickled)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from medmtl.errors import MedmtlError

REQUIRED = ("state_dict", "hyper_parameters")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check it is a medmtl one."""
    path = Path(path)
    if not path.is_file():
        raise MedmtlError(
            f"{path}: checkpoint not found. Give ckpt_path=<run>/checkpoints/<file>.ckpt."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MedmtlError(
            f"{path}: not a loadable checkpoint ({first[:160]}). medmtl only loads plain-tensor "
            "checkpoints (weights_only=True); use one written by medmtl-train."
        ) from exc
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED):
        raise MedmtlError(f"{path}: not a medmtl checkpoint (no state_dict/hyper_parameters).")
    hp = ckpt["hyper_parameters"]
    if not {"model", "loss", "class_names"} <= set(hp):
        raise MedmtlError(
            f"{path}: a Lightning checkpoint, but not from medmtl-train (no model settings)."
        )
    return ckpt


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

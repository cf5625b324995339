"""Loading medmtl checkpoints safely (``weights_only=True``: nothing is unpickled), and the
network they hold, without the training machinery (Lightning is not imported)."""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from medmtl.errors import ConfigError, MedmtlError
from medmtl.io.files import atomic_path
from medmtl.models.multitask import MultiTaskNet
from medmtl.models.upgrade import upgrade
from medmtl.settings.model import NetSettings

REQUIRED = ("state_dict", "hyper_parameters")
# the conformal answer sets' calibration images (plain lists; medmtl.models.conformal)
CONFORMAL_KEY = "medmtl_conformal"


def checkpoint_not_found(path: Path) -> MedmtlError:
    """The one line for a checkpoint file that is not there."""
    return MedmtlError(
        f"{path}: checkpoint not found. Give ckpt_path=<run>/checkpoints/<file>.ckpt."
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check it is a medmtl one."""
    path = Path(path)
    if not path.is_file():
        raise checkpoint_not_found(path)
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
    ckpt["hyper_parameters"] = hp = upgrade(hp, str(path))
    try:
        NetSettings.from_dict(hp["model"])  # read once here, so a damaged one names the file
    except ConfigError as exc:
        raise MedmtlError(
            f"{path}: its model settings are not medmtl's ({str(exc).rstrip('.')})."
        ) from exc
    return ckpt


def stored_net(hp: dict[str, Any], weights: bool = True) -> NetSettings:
    """The network a checkpoint's (upgraded) hyper-parameters describe; ``weights=False``: no
    encoder weights to fetch (they come from the state dict)."""
    net = NetSettings.from_dict(hp["model"])
    return net if weights else replace(net, encoder_weights=None)


def network_from_checkpoint(path: str | Path) -> tuple[MultiTaskNet, dict[str, Any]]:
    """The checkpoint's network in eval mode (no weight download) and the checkpoint itself."""
    ckpt = load_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    classes = list(hp["class_names"])
    net = MultiTaskNet.from_settings(stored_net(hp, weights=False), classes)
    state = {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    return net.eval(), ckpt


def store_calibration(
    path: str | Path,
    temperature: float,
    answer_sets: dict[str, Any] | None = None,
    buffers: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the class logits' temperature, the conformal answer sets' calibration
    (:meth:`medmtl.models.conformal.AnswerSets.to_dict`) and other fitted buffers of the
    network (by their names in it: ``unlike.threshold``, ``shift_sample``...) into a
    checkpoint, atomically: the old file stays whole until the new one is complete."""
    ckpt = load_checkpoint(path)
    state = ckpt["state_dict"]
    state["net.cls_temperature"] = torch.tensor(float(temperature))
    for name, value in (buffers or {}).items():
        state[f"net.{name}"] = value.detach().cpu().clone()
    if answer_sets is not None:
        ckpt[CONFORMAL_KEY] = answer_sets
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)

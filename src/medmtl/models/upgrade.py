"""Older medmtl models in today's form: checkpoints' hyper-parameters and exported ONNX models'
metadata. The one place that knows the older forms, so that the rest of the code reads one form
only; torch is not imported (the ONNX backend runs without it).
"""

from __future__ import annotations

from typing import Any

from medmtl.errors import MedmtlError
from medmtl.models.calibration import calibration_record
from medmtl.settings.model import ModelSettings

# model settings added after the first checkpoints: what a checkpoint without them did
MODEL_ADDED = {
    k: getattr(ModelSettings(), k)
    for k in ("empty_mask_min_prob", "empty_mask_keep_above", "mask_threshold",
              "deep_supervision", "norm")
}  # fmt: skip
# checkpoints written before optimizer/scheduler were config groups name them
LEGACY_TARGETS = {
    "optimizer": {
        "adamw": "torch.optim.AdamW",
        "adam": "torch.optim.Adam",
        "sgd": "torch.optim.SGD",
    },
    "scheduler": {"cosine": "medmtl.training.schedules.cosine"},
}


def upgrade(hp: dict[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """A checkpoint's hyper-parameters in today's form: the one place that knows the older
    forms (model settings added since, optimizer and schedule named instead of given as a
    ``_target_``, a data config naming its class). Every loader goes through it
    (:func:`load_checkpoint`), so the rest of the code reads one form only."""
    hp = dict(hp)
    hp["model"] = {**MODEL_ADDED, **dict(hp["model"])}
    for group, legacy in LEGACY_TARGETS.items():
        cfg = hp.get(group)
        if not isinstance(cfg, dict) or "_target_" in cfg or "name" not in cfg:
            continue
        cfg = dict(cfg)
        name = str(cfg.pop("name")).lower()
        if name == "none" and group == "scheduler":
            hp[group] = None
            continue
        if name not in legacy:
            raise MedmtlError(
                f"{source}: {group}.name={name!r} is unknown; choose one of {', '.join(legacy)}."
            )
        hp[group] = {"_target_": legacy[name], **cfg}
    if isinstance(hp.get("data"), dict):
        hp["data"] = {k: v for k, v in hp["data"].items() if k != "_target_"}
    return hp


def upgrade_onnx_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """An exported model's ``medmtl`` metadata in today's form: the entries added since the
    first exports get the value those models behaved with (no post-processing, uncalibrated
    logits, no conformal answer sets, no unlike-training score, an empty card, no test-time
    flip)."""
    added = {
        "postprocess": ModelSettings().postprocess,
        "calibration": calibration_record(None),
        "conformal": None,
        "unlike": {"fitted": False},
        "card": {},
        "tta": False,
    }
    out = dict(meta)
    for key, value in added.items():
        if not out.get(key):
            out[key] = value
    return out

"""The model card a served model shows: what it is, what it was trained on, how it tested.

The training data set and its test metrics come from the checkpoint's run folder
(``metrics.json`` beside ``checkpoints/``) or from an exported ONNX model's metadata, which
``medmtl-export`` fills from the same file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# the test metrics a card shows (metrics.json keys without the split)
CARD_METRICS = (
    "cls_acc",
    "cls_f1",
    "cls_auc",
    "cls_ece",
    "seg_dice",
    "seg_dice_lesion",
    "seg_iou_lesion",
    "normal_fp_rate",
)


def card_from_metrics(metrics: dict[str, Any], source: str = "") -> dict[str, Any]:
    """The training data set and test metrics of a run's (or an ensemble's) ``metrics.json``."""
    split = str(metrics.get("eval/split") or "test")
    test = {
        k: metrics[f"{split}/{k}"] for k in CARD_METRICS if metrics.get(f"{split}/{k}") is not None
    }
    out: dict[str, Any] = {"trained_on": metrics.get("data/name"), "test_split": split}
    if metrics.get("num_images") is not None:
        out["test_images"] = metrics["num_images"]
    out["test_metrics"] = test
    if source:
        out["metrics_from"] = source
    return out


def card_from_checkpoint(ckpt_path: str | Path, hparams: dict[str, Any]) -> dict[str, Any]:
    """The card of a checkpoint: its run folder's metrics.json if there is one."""
    data = hparams.get("data") or {}
    card: dict[str, Any] = {"trained_on": data.get("name")}
    metrics = Path(ckpt_path).resolve().parent.parent / "metrics.json"
    if metrics.is_file():
        try:
            card.update(card_from_metrics(json.loads(metrics.read_text()), str(metrics)))
        except ValueError:
            card["metrics_from"] = f"{metrics} (unreadable)"
    return card

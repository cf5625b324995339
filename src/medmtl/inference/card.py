"""The model card a served model shows: what it is, what it was trained on, how it tested.

The training data set and its test metrics come from the checkpoint's run folder
(``metrics.json`` beside ``checkpoints/``) or from an exported ONNX model's metadata, which
``medmtl-export`` fills from the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medmtl.errors import DataError
from medmtl.settings.record import RunRecord, read_record

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


def card_from_metrics(metrics: RunRecord | dict[str, Any], source: str = "") -> dict[str, Any]:
    """The training data set and test metrics of a run's (or an ensemble's) record."""
    record = metrics if isinstance(metrics, RunRecord) else RunRecord.from_metrics(metrics)
    split = record.split
    found = {k: record.metric(f"{split}/{k}") for k in CARD_METRICS}
    test = {k: v for k, v in found.items() if v is not None}
    out: dict[str, Any] = {"trained_on": record.data_name, "test_split": split}
    if record.num_images is not None:
        out["test_images"] = record.num_images
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
            card.update(card_from_metrics(read_record(metrics), str(metrics)))
        except DataError:
            card["metrics_from"] = f"{metrics} (unreadable)"
    return card

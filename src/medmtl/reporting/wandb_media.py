"""W&B media and tables built from what an evaluation writes: scans with their predicted and
true masks as W&B segmentation media (the UI toggles each over the scan), the per-image
predictions as a sortable ``wandb.Table`` and any rendered table (``medmtl-tables``).

``wandb`` is imported only when something is logged: medmtl without W&B never loads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medmtl.data.manifest import read_csv_rows

# the mask classes W&B shows in its legend (0 is the scan itself)
MASK_LABELS = {0: "background", 1: "lesion"}
# W&B's mask keys: the UI lists them by these names, each toggled over the scan
PREDICTION, TRUTH = "prediction", "ground_truth"
# predictions-CSV columns kept as text; every other non-empty cell is a number
TEXT_COLUMNS = {"id", "dataset", "split", "true_class", "pred_class", "answer_set"}


def masked_image(
    image: np.ndarray,
    prediction: np.ndarray,
    truth: np.ndarray | None = None,
    caption: str | None = None,
) -> Any:
    """A ``wandb.Image`` of an 8-bit scan (H×W) with its predicted and, when known, true
    lesion mask as W&B segmentation masks."""
    import wandb

    masks = {PREDICTION: _mask(prediction)}
    if truth is not None:
        masks[TRUTH] = _mask(truth)
    return wandb.Image(np.asarray(image, dtype=np.uint8), masks=masks, caption=caption)


def _mask(mask: np.ndarray) -> dict[str, Any]:
    return {"mask_data": (np.asarray(mask) > 0).astype(np.uint8), "class_labels": MASK_LABELS}


def _number_or_text(text: str) -> Any:
    """A CSV cell as a number where it is one, else its text (a label, a cell with its CI)."""
    try:
        return float(text)
    except ValueError:
        return text


def _cell(column: str, text: str) -> Any:
    if column in TEXT_COLUMNS:
        return text
    if text == "":
        return None
    value = _number_or_text(text)  # metadata columns (Device, Side, ...) stay text
    if isinstance(value, float) and value.is_integer() and column.endswith("pixels"):
        return int(value)
    return value


def predictions_table(predictions_csv: str | Path, masks: Mapping[str, np.ndarray] | None) -> Any:
    """The rows of ``predictions_<split>.csv`` as a ``wandb.Table``, numbers as numbers, with
    a first column ``image`` (the scan with both masks) when ``masks`` holds the images in the
    file's order (``image``, ``mask``, ``pred_mask``: :func:`masks_in_order`)."""
    import wandb

    path = Path(predictions_csv)
    header, rows = read_csv_rows(path, ("id",), "predictions file")
    columns = list(header)
    data = [[_cell(c, row.get(c, "")) for c in columns] for row in rows]
    if masks is not None:
        images = masks["image"]
        if len(images) != len(rows):
            raise ValueError(f"{path}: {len(rows)} rows for {len(images)} images")
        columns = ["image", *columns]
        data = [
            [masked_image(images[i], masks["pred_mask"][i], masks["mask"][i]), *row]
            for i, row in enumerate(data)
        ]
    return wandb.Table(columns=columns, data=data)


def text_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Any:
    """A ``wandb.Table`` of a rendered CSV's cells (numbers where a cell is one, else its
    text; empty cells stay empty)."""
    import wandb

    def cell(text: str) -> Any:
        return _number_or_text(text) if text.strip() else text

    return wandb.Table(columns=list(columns), data=[[cell(v) for v in r] for r in rows])


def figure_media(paths: Sequence[Path]) -> dict[str, Any]:
    """Saved figures as W&B images, ``figures/<file stem>``."""
    import wandb

    return {f"figures/{p.stem}": wandb.Image(str(p)) for p in paths}


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a ``metrics.json`` (lists, text and None left out)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            continue
        out[k] = v
    return out

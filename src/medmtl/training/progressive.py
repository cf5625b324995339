"""Progressive resizing (``data.progressive_resize``): train small, finish at ``data.image_size``.

For the first ``fraction`` of the epochs the training batches are resized down, from
``start_size`` in steps of 32 px towards the input size; the rest of training, validation,
testing, prediction and export run at ``data.image_size``. The small epochs cost less (the
network's work grows with the square of the side), and the last ones adapt the network to the
size it is used at (fastai's progressive resizing; Tan & Le, EfficientNetV2, 2021).

The batches are resized inside the training step (bilinear with anti-aliasing for the image,
area then ≥ 0.5 for the mask), so the data pipeline, its cache and its loader processes stay
those of the final size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from medmtl.errors import ConfigError
from medmtl.settings.data import DATA, check_image_size


@dataclass(frozen=True)
class ProgressiveResize:
    """Which side the training batches of an epoch have (``start_size`` None: always the
    input size)."""

    final_size: int
    start_size: int | None = None
    fraction: float = 0.5

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> ProgressiveResize:
        """The schedule of a data config (``data.progressive_resize``), checked (one line)."""
        data = data or {}
        final = int(data.get("image_size", DATA.image_size))
        cfg = dict(data.get("progressive_resize") or {})
        start = cfg.get("start_size")
        if start is None:
            return cls(final)
        check_image_size(start, key="data.progressive_resize.start_size")
        if int(start) >= final:
            raise ConfigError(
                f"data.progressive_resize.start_size={start}: must be smaller than "
                f"data.image_size={final} (training finishes at the input size)."
            )
        fraction = cfg.get("fraction", DATA.progressive_resize.fraction)
        try:
            ok = 0.0 < float(fraction) < 1.0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(
                f"data.progressive_resize.fraction={fraction}: the share of the epochs trained "
                "small, strictly between 0 and 1, e.g. 0.5."
            )
        return cls(final, int(start), float(fraction))

    @property
    def active(self) -> bool:
        return self.start_size is not None

    def size_at(self, epoch: int, max_epochs: int) -> int:
        """The side of epoch ``epoch`` (0-based) of ``max_epochs``: from ``start_size`` up in
        steps of 32 over the first ``fraction`` of the epochs, then the input size."""
        if self.start_size is None:
            return self.final_size
        small = math.floor(self.fraction * max(1, max_epochs))
        if epoch >= small:
            return self.final_size
        steps = (self.final_size - self.start_size) // 32  # sizes below the final one
        return self.start_size + 32 * min(steps - 1, epoch * steps // max(1, small))

    def to_dict(self) -> dict[str, Any]:
        """The record for metrics.json (None: off)."""
        if self.start_size is None:
            return {}
        return {"start_size": self.start_size, "fraction": self.fraction}


def resized_batch(
    image: torch.Tensor, mask: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch at ``size`` × ``size``: the image bilinear with anti-aliasing, the mask
    by area (the share of lesion under each new pixel) thresholded at 0.5."""
    if image.shape[-1] == size and image.shape[-2] == size:
        return image, mask
    image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True)
    mask = (F.interpolate(mask.float(), size=(size, size), mode="area") >= 0.5).to(mask.dtype)
    return image, mask

"""Post-processing of predicted lesion masks: keep the largest lesion, fill holes.

BUSI images show one lesion in 97 % of the lesion cases, and a lesion has no holes, so a
predicted mask with scattered specks or a hole in its middle is wrong where it differs. Both
steps act on the thresholded mask (numpy; not part of the exported network) and are used
identically by the evaluation (on the model's input grid) and by ``medmtl-predict`` (at the
image's size).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from medmtl.settings.checks import known_keys
from medmtl.settings.model import PostProcessSettings

# 8-connectivity: pixels touching at a corner belong to one lesion
_STRUCTURE = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class PostProcess(PostProcessSettings):
    """``model.postprocess`` as applied to a thresholded mask: its settings, checked, and the
    operation itself."""

    @property
    def active(self) -> bool:
        return self.largest_component or self.fill_holes or self.min_area > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> PostProcess:
        return cls(**known_keys("model.postprocess", dict(d or {}), cls))

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        """A post-processed copy of one binary mask (H, W)."""
        out = np.asarray(mask).astype(bool)
        if not self.active or not out.any():
            return out
        if self.min_area > 0 or self.largest_component:
            labels, n = ndimage.label(out, structure=_STRUCTURE)
            if n > 0:
                sizes = np.bincount(labels.ravel(), minlength=n + 1)
                sizes[0] = 0
                keep = sizes >= max(self.min_area, 1)
                if self.largest_component:
                    keep = np.zeros_like(keep)
                    keep[int(np.argmax(sizes))] = True
                out = keep[labels]
        if self.fill_holes:
            out = ndimage.binary_fill_holes(out)
        return out

"""The ``loss`` settings: the schema of the ``loss`` config group and of a checkpoint's loss."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from medmtl.settings.checks import choice, known_keys, number

SEG_LOSSES = ("dice_bce", "dice", "bce", "focal", "tversky", "lovasz")
CLS_LOSSES = ("ce", "focal")
WEIGHTINGS = ("fixed", "uncertainty")
OFF_OR_MORE = "must be a number ≥ 0 (0: off)"


@dataclass
class LossSettings:
    """How the task losses are combined (:class:`medmtl.training.losses.MultiTaskLoss`).

    ``L = λ·L_seg + (1 − λ)·L_cls`` with ``λ = seg_weight`` (``weighting=fixed``), or learned
    homoscedastic-uncertainty weighting (``weighting=uncertainty``; ``seg_weight`` unused).
    """

    seg: str = "dice_bce"  # one of SEG_LOSSES
    cls: str = "ce"  # one of CLS_LOSSES
    seg_weight: float = 0.7  # λ in [0, 1]
    weighting: str = "fixed"  # one of WEIGHTINGS
    label_smoothing: float = 0.0  # cross-entropy only
    # per-class weights in data.classes order, e.g. [1.0, 0.5, 1.0]; None: equal
    class_weights: list[float] | None = None
    focal_gamma: float = 2.0
    tversky_alpha: float = 0.3
    tversky_beta: float = 0.7
    # a lesion-presence (detection) term on the mask alone: BCE of each image's highest mask
    # logit against "has a lesion" (0: off; docs/training.md)
    presence_weight: float = 0.0
    # with model.deep_supervision=true: the weight of the decoder stages' mean mask loss
    deep_supervision_weight: float = 0.5

    def __post_init__(self) -> None:
        choice("loss.seg", self.seg, SEG_LOSSES)
        choice("loss.cls", self.cls, CLS_LOSSES)
        choice("loss.weighting", self.weighting, WEIGHTINGS)
        self.seg_weight = number(
            "loss.seg_weight", self.seg_weight, float, 0, 1, "λ must be a number in [0, 1]"
        )
        self.label_smoothing = number("loss.label_smoothing", self.label_smoothing, float, 0, 1)
        self.focal_gamma = number("loss.focal_gamma", self.focal_gamma, float, 0)
        for key in ("presence_weight", "deep_supervision_weight"):
            value = number(f"loss.{key}", getattr(self, key), float, 0, None, OFF_OR_MORE)
            setattr(self, key, value)
        for key in ("tversky_alpha", "tversky_beta"):
            setattr(self, key, number(f"loss.{key}", getattr(self, key), float, 0.0, 1.0))
        if self.class_weights is not None:
            self.class_weights = [
                number("loss.class_weights", w, float, 0.0) for w in self.class_weights
            ]

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> LossSettings:
        """Checked settings from a config or checkpoint dict; missing keys take the defaults,
        an unknown key is refused with the known ones."""
        return cls(**known_keys("loss", dict(values or {}), cls))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (what a checkpoint stores)."""
        return asdict(self)

"""The ``loss`` settings: the schema of the ``loss`` config group and of a checkpoint's loss."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from medmtl.settings.checks import check_own_fields, known_keys, ranged

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

    seg: str = ranged("dice_bce", choices=SEG_LOSSES)
    cls: str = ranged("ce", choices=CLS_LOSSES)
    seg_weight: float = ranged(0.7, 0, 1, what="λ must be a number in [0, 1]")  # λ
    weighting: str = ranged("fixed", choices=WEIGHTINGS)
    label_smoothing: float = ranged(0.0, 0, 1)  # cross-entropy only
    # per-class weights in data.classes order, e.g. [1.0, 0.5, 1.0]; None: equal
    class_weights: list[float] | None = ranged(None, 0)
    focal_gamma: float = ranged(2.0, 0)
    tversky_alpha: float = ranged(0.3, 0, 1)
    tversky_beta: float = ranged(0.7, 0, 1)
    # a lesion-presence (detection) term on the mask alone: BCE of each image's highest mask
    # logit against "has a lesion" (0: off; docs/training.md)
    presence_weight: float = ranged(0.0, 0, what=OFF_OR_MORE)
    # with model.deep_supervision=true: the weight of the decoder stages' mean mask loss
    deep_supervision_weight: float = ranged(0.5, 0, what=OFF_OR_MORE)

    def __post_init__(self) -> None:
        check_own_fields(self, "loss")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> LossSettings:
        """Checked settings from a config or checkpoint dict; missing keys take the defaults,
        an unknown key is refused with the known ones."""
        return cls(**known_keys("loss", dict(values or {}), cls))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (what a checkpoint stores)."""
        return asdict(self)

"""The evaluation settings: what ``medmtl-eval`` (``conf/eval.yaml``) may change about how a
trained model is tested, with their defaults, help and checks.

Registered with Hydra as the ``eval_schema`` that ``conf/eval.yaml`` starts from; the same
checks run for ``medmtl-ensemble``'s options of the same names. The module applies them through
one method (:meth:`medmtl.training.module.MultiTaskModule.configure_evaluation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from medmtl.errors import ConfigError, open_fraction
from medmtl.settings.checks import (
    check_own_fields,
    choice,
    flag,
    known_keys,
    number,
    opt,
    own_values,
)

SPLITS = ("train", "val", "test", "all")  # all: every image of the data set (nothing is split)
ADAPT_CHOICES = ("none", "bn")
AS_TRAINED = "as_trained"  # keep what the model was trained (or its ensemble evaluated) with
# the gate's thresholds and the mask threshold: what an evaluation may set on a trained network
GATE_KEYS = ("empty_mask_min_prob", "empty_mask_keep_above", "mask_threshold")


def check_mask_threshold(value: object) -> float:
    """``model.mask_threshold`` as a probability strictly between 0 and 1 (one line if not)."""
    return open_fraction(value, "model.mask_threshold", "a mask probability threshold", 0.4)


A_PROBABILITY = "a probability, in [0, 1]"


def check_gate_value(key: str, value: Any, prefix: str = "") -> Any:
    """One of :data:`GATE_KEYS` set to ``value``, checked (``prefix``: of the key in the
    message, e.g. ``model.``; without one, ``as_trained`` passes: an evaluation's choice)."""
    if value == AS_TRAINED and not prefix:
        return value
    if key == "mask_threshold":
        return check_mask_threshold(value)
    if key == "empty_mask_keep_above" and value is None:
        return None  # never kept
    got = 0.0 if value is None else value
    return number(prefix + key, got, float, 0.0, 1.0, A_PROBABILITY)


@dataclass
class ShiftPower:
    """How often random batches of the evaluated images would be flagged by the shift test
    (:mod:`medmtl.models.shift`): its power on another scanner, its false alarms on the
    model's own."""

    test: bool = opt(False, "test the split against the model's reference (true with batches)")
    batches: list[int] = opt([], "also random batches of these sizes, e.g. [10,30,100]")
    repeats: int = opt(200, "random batches of each size", low=1)
    seed: int = opt(0, "the draws' seed", low=0)

    def __post_init__(self) -> None:
        sizes = [self.batches] if isinstance(self.batches, int) else list(self.batches or [])
        self.batches = [number("shift.batches", b, int, 2, None, "2 or more images") for b in sizes]
        check_own_fields(self, "shift")
        self.test = bool(self.test or self.batches)


@dataclass
class EvalSettings:
    """How a trained model is tested (``medmtl-eval``); ``ckpt_path`` and ``data`` are read by
    the command itself."""

    split: str = opt("test", "train | val | test | all (every image; nothing is split)")
    class_map: dict[str, str] | None = opt(
        None,
        "another data set's classes -> the model's, e.g. class_map={B: benign, M: malignant}; "
        "null: the same names (a data set with fewer classes is scored over the mapped ones)",
    )
    by: list[str] = opt([], "metrics per value of these per-image columns too (by=Device)")
    empty_mask_class: str | None = opt(
        AS_TRAINED,
        "the classification gate of the masks: as_trained, null (off: the raw segmentation) or "
        "a class name (e.g. normal) to try it on any multi-task model",
    )
    empty_mask_min_prob: Any = opt(
        AS_TRAINED, "the gate's P(class) threshold: as_trained or [0, 1]"
    )
    empty_mask_keep_above: Any = opt(
        AS_TRAINED, "keep a mask whose own maximum reaches this: as_trained, null or [0, 1]"
    )
    mask_threshold: Any = opt(AS_TRAINED, "the mask threshold: as_trained or in (0, 1)")
    postprocess: dict[str, Any] = opt(
        {},
        "mask post-processing: {} = as trained; e.g. postprocess.largest_component=true "
        "postprocess.fill_holes=true postprocess.min_area=20",
    )
    tta: bool | None = opt(
        None, "test-time horizontal flip; null: as the model's own evaluation (its metrics.json)"
    )
    calibrated: bool = opt(
        True, "the class probabilities as calibrated after training; false: without temperature"
    )
    conformal: dict[str, Any] = opt(
        {"alpha": None, "by_class": None},
        "conformal answer sets at another error rate (conformal.alpha) or class by class "
        "(conformal.by_class); null: as calibrated after training",
    )
    adapt: str = opt(
        "none", "test-time adaptation without labels: none | bn (AdaBN on the evaluated images)"
    )
    save_masks: bool = opt(
        False, "also write masks_<split>.npz (the images, ground truth and scored masks)"
    )
    channels_last: bool = opt(True, "channels-last memory format, as in training")
    figures: bool = opt(True, "the evaluation figures (false: metrics and CSVs only)")
    shift: ShiftPower = opt(
        ShiftPower(),
        "the shift test of the split against the model's reference (shift.test=true; "
        "shift.batches=[10,30,100]: also random batches of these sizes)",
    )

    def __post_init__(self) -> None:
        if isinstance(self.shift, Mapping):
            self.shift = ShiftPower(**known_keys("shift", dict(self.shift), ShiftPower))
        elif not isinstance(self.shift, ShiftPower):
            raise ConfigError(
                f"shift={self.shift!r}: expected shift.test=true or shift.batches=[...]."
            )
        choice("split", self.split, SPLITS)
        choice("adapt", self.adapt, ADAPT_CHOICES)
        for key in ("calibrated", "save_masks", "channels_last", "figures"):
            flag(key, getattr(self, key))
        if self.tta is not None and not isinstance(self.tta, bool):
            raise ConfigError(f"tta={self.tta!r}: expected true, false or null.")
        for key in GATE_KEYS:
            setattr(self, key, check_gate_value(key, getattr(self, key)))
        self.by = [self.by] if isinstance(self.by, str) else list(self.by or [])
        self.conformal = known_keys("conformal", dict(self.conformal or {}), _Conformal)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EvalSettings:
        """Checked settings from a composed config's (or a dict's) top level; other keys are
        left out: the command's own, such as ``ckpt_path``, ``data`` and ``trainer``."""
        return cls(**own_values(values, cls))

    def gate(self) -> dict[str, Any]:
        """The gate settings given (``as_trained`` ones left out)."""
        return {k: getattr(self, k) for k in GATE_KEYS if getattr(self, k) != AS_TRAINED}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Conformal:
    alpha: float | None = None
    by_class: bool | None = None

"""The run settings of ``medmtl-train``: every top-level key of ``conf/train.yaml`` that is not
a config group (data, model, loss, optimizer... have their own schemas), with its default, its
help and its check.

Registered with Hydra as the ``train_schema`` that ``conf/train.yaml`` starts from, so the YAML
file holds no default of its own; :meth:`TrainSettings.from_dict` checks a composed config's
values in medmtl's one-line form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from medmtl.errors import ConfigError, open_fraction
from medmtl.settings.checks import check_fields, check_own_fields, known_keys, opt, own_values

ALPHA = 0.1  # conformal.alpha: the answer sets' error rate
QUANTILE = 0.95  # unlike.quantile: the share of validation scans that pass
SHIFT_DIMS = 64  # shift.dims: principal components compared (chosen on the Logiq 7 dev fold)
SHIFT_MAX_DIMS = 128  # the network holds at most this many components ...
SHIFT_MAX_REFERENCE = 512  # ... and reference images (a seeded random subset of more)
SHIFT_ALPHA = 0.01  # the shift test's level: a batch with p below it is flagged
SHIFT_PERMUTATIONS = 1999  # permutations behind a shift test's p-value
SHIFT_MIN_IMAGES = 10  # fewer images are not tested (medmtl-predict's summary, the page)
SHIFT_RECENT = 100  # the page's shift test: the server's most recent uploads, at most this many


def check_alpha(alpha: Any, key: str = "conformal.alpha") -> float:
    """``alpha`` as a float in (0, 1), or a one-line ConfigError naming ``key``."""
    return open_fraction(alpha, key, "an error rate", ALPHA)


def check_quantile(value: object, key: str = "unlike.quantile") -> float:
    """``value`` as a float in (0, 1), or a one-line ConfigError naming ``key``."""
    return open_fraction(value, key, "a share", QUANTILE)


@dataclass
class Calibration:
    """After training: temperature scaling of the class probabilities, fitted on the
    validation split (never the test split) and stored in the best checkpoint."""

    temperature: bool = opt(True, "fit the temperature after training")

    def __post_init__(self) -> None:
        check_own_fields(self, "calibration")


@dataclass
class Conformal:
    """Conformal answer sets ("benign or malignant"), calibrated on the validation images: the
    true class is in the set for at least 1 - alpha of the images."""

    alpha: float = opt(ALPHA, "the error rate, in (0, 1)")
    by_class: bool = opt(False, "the coverage for every class, not only on average")

    def __post_init__(self) -> None:
        self.alpha = check_alpha(self.alpha)
        check_own_fields(self, "conformal")


@dataclass
class Unlike:
    """ "Unlike the training data": the distance of a scan's pooled encoder features to the
    training classes, with a threshold that this share of validation images pass."""

    quantile: float | None = opt(QUANTILE, "the share of validation images that pass (null: off)")

    def __post_init__(self) -> None:
        if self.quantile is not None:
            self.quantile = check_quantile(self.quantile)


@dataclass
class Shift:
    """The shift test's reference: the validation images' pooled encoder features on the
    leading principal components of the training images' (medmtl.models.shift)."""

    dims: int | None = opt(
        SHIFT_DIMS, "principal components compared (null: no reference)", low=1, high=SHIFT_MAX_DIMS
    )

    def __post_init__(self) -> None:
        check_own_fields(self, "shift")


@dataclass
class Distill:
    """Knowledge distillation: also learn a trained teacher's class probabilities and mask map;
    loss (1 - weight)·L_task + weight·L_distill, probabilities softened by temperature."""

    teacher: str | None = opt(None, "a checkpoint, run, ensemble or sweep folder (null: off)")
    weight: float = opt(0.5, "the distillation loss's share, in (0, 1]")
    temperature: float = opt(2.0, "the softening temperature, > 0")

    def __post_init__(self) -> None:
        for key, ok, what in (
            ("weight", lambda v: 0 < v <= 1, "in (0, 1], e.g. 0.5"),
            ("temperature", lambda v: v > 0 and math.isfinite(v), "> 0, e.g. 2"),
        ):
            value = getattr(self, key)
            try:
                good = not isinstance(value, bool) and ok(float(value))
            except (TypeError, ValueError):
                good = False
            if not good:
                raise ConfigError(f"distill.{key}={value}: must be {what}.")
        check_own_fields(self, "distill")


GROUPS: dict[str, type] = {
    "calibration": Calibration,
    "conformal": Conformal,
    "unlike": Unlike,
    "shift": Shift,
    "distill": Distill,
}


def _group(cls: type) -> Any:
    return field(default_factory=cls, metadata={"help": (cls.__doc__ or "").split("\n")[0]})


@dataclass
class TrainSettings:
    """The top level of ``conf/train.yaml``: how a run is seeded, resumed, tested, calibrated
    and distilled."""

    task_name: str = opt("train", "the run's kind (its folder's first part)")
    tags: list[str] = opt([], "labels of the run (W&B tags, run records)")
    seed: int | None = opt(42, "seed_everything(seed, workers=True); null: no seeding")
    ckpt_path: str | None = opt(None, "resume: <run>/checkpoints/last.ckpt")
    init_from: str | None = opt(
        None,
        "fine-tune: start from this model's weights (a checkpoint or run folder), with "
        "a new schedule and a new run folder",
    )
    test: bool = opt(True, "after training, evaluate the best checkpoint on val and test")
    threads: int | None = opt(None, "torch CPU threads per run (null: torch's default)", low=1)
    tta: bool = opt(False, "test-time flip in the final evaluation of the best checkpoint")
    figures: bool = opt(True, "the evaluation figures after the test (false: metrics and CSVs)")
    calibration: Calibration = _group(Calibration)
    conformal: Conformal = _group(Conformal)
    unlike: Unlike = _group(Unlike)
    shift: Shift = _group(Shift)
    distill: Distill = _group(Distill)
    channels_last: bool = opt(True, "channels-last memory format (1.18x on the 2-core CPU)")
    optimized_metric: str = opt("val/overall", "what a Hydra sweeper optimises")

    def __post_init__(self) -> None:
        for name, cls in GROUPS.items():
            value = getattr(self, name)
            if isinstance(value, Mapping):
                setattr(self, name, cls(**known_keys(name, dict(value), cls)))
            elif not isinstance(value, cls):
                raise ConfigError(f"{name}={value!r}: expected a group of settings (key: value).")
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in GROUPS}
        for name, value in check_fields("", own, type(self)).items():
            setattr(self, name, value)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainSettings:
        """Checked settings from a composed config's top level (its groups left out)."""
        return cls(**own_values(values, cls))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

"""The ``model`` settings: the shared-encoder network's options, with their defaults and checks.

:class:`ModelSettings` is the schema of the ``model`` config group (registered as
``model/schema``; the architecture and the encoder come from the ``model/arch`` and
``model/encoder`` sub-groups). The network's arguments, the check before any data and the
upgrade of older checkpoints (:func:`medmtl.models.upgrade.upgrade`, which gives a setting
added since its default here) read it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from medmtl.errors import ConfigError
from medmtl.settings.checks import check_fields, check_own_fields, choice, known_keys, ranged
from medmtl.settings.evaluation import A_PROBABILITY, check_mask_threshold

TASKS = ("multitask", "seg", "cls")  # the same network with one head off
NORMS = ("batch", "group", "instance")


def check_net_values(task: Any, norm: Any, mask_threshold: Any) -> float:
    """The task, the normalisation and the mask threshold of a network, checked (also for a
    network built without a config); returns the threshold as a float."""
    choice("model.task", task, TASKS)
    choice("model.norm", norm, NORMS)
    return check_mask_threshold(mask_threshold)


def _default(value: Any) -> Any:
    return field(default_factory=lambda: copy.deepcopy(value))


@dataclass(frozen=True)
class PostProcessSettings:
    """Post-processing of the thresholded mask in evaluation and prediction (not training)."""

    largest_component: bool = False  # keep only the largest lesion
    fill_holes: bool = False
    min_area: int = ranged(0, 0)  # drop lesions under this many pixels

    def __post_init__(self) -> None:
        check_own_fields(self, "model.postprocess")


@dataclass
class ArchSettings:
    """``model/arch``: the smp architecture and its own arguments."""

    name: str = "Unet"
    kwargs: dict[str, Any] = _default({})


@dataclass
class EncoderSettings:
    """``model/encoder``: the encoder and its weights (a name of models.weights, or null)."""

    name: str = "tu-efficientnet_lite0"
    weights: str | None = None


@dataclass
class ModelSettings:
    """The ``model`` group. ``arch`` (``name``, smp ``kwargs``) and ``encoder`` (``name``,
    ``weights``) come from their sub-groups' files."""

    arch: dict[str, Any] = _default(asdict(ArchSettings()))
    encoder: dict[str, Any] = _default(asdict(EncoderSettings()))
    task: str = "multitask"  # one of TASKS
    in_channels: int = ranged(1, 1)  # grey images
    cls_hidden: int = ranged(256, 0)  # MLP hidden size of the classification head (0: linear)
    cls_dropout: float = ranged(0.2, 0.0, 0.99)
    # the encoder's and decoder's normalisation: batch (the pretrained one) | group | instance
    # (per-image statistics: nothing of the training scanner's intensities is stored)
    norm: str = "batch"
    # extra mask heads on the decoder's stages, scored in training only
    # (loss.deep_supervision_weight); Unet, UnetPlusPlus, MAnet, Linknet
    deep_supervision: bool = False
    # multitask only: in evaluation and prediction, an image classified as this class (e.g.
    # normal) gets an empty mask; None: segmentation and classification stay independent
    empty_mask_class: str | None = None
    # ... only when P(that class) is at least this (0: whenever it is the arg-max), and not when
    # the mask's own maximum reaches empty_mask_keep_above (None: never kept)
    empty_mask_min_prob: float = ranged(0.0, 0.0, 1.0, what=A_PROBABILITY)
    empty_mask_keep_above: float | None = ranged(None, 0.0, 1.0, what=A_PROBABILITY)
    # a pixel is lesion where its mask probability reaches this (evaluation and prediction)
    mask_threshold: float = 0.5
    postprocess: dict[str, Any] = _default(asdict(PostProcessSettings()))

    def __post_init__(self) -> None:
        threshold = self.mask_threshold  # named as given in its message (1, not 1.0)
        check_own_fields(self, "model")
        # every sub-group's key present, its default where the config leaves it out
        self.arch = asdict(ArchSettings(**check_fields("model.arch", self.arch, ArchSettings)))
        self.encoder = asdict(
            EncoderSettings(**check_fields("model.encoder", self.encoder, EncoderSettings))
        )
        self.mask_threshold = check_net_values(self.task, self.norm, threshold)
        pp = check_fields("model.postprocess", self.postprocess, PostProcessSettings)
        self.postprocess = asdict(PostProcessSettings(**pp))

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ModelSettings:
        """Checked settings of a composed ``model`` group; an unknown key is refused."""
        return cls(**known_keys("model", dict(values or {}), cls))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_MODEL = ModelSettings()  # the defaults the network's settings take from


@dataclass
class NetSettings:
    """The network a run builds and a checkpoint stores (its ``hyper_parameters["model"]``):
    :class:`ModelSettings` with the architecture and the encoder resolved to names (a
    profile's stand-in encoder substituted, the study encoder kept as ``encoder_study``).

    Built once from the config (:func:`medmtl.workflows.build.net_settings`) or read back once
    from a checkpoint (``NetSettings.from_dict(upgrade(hp)["model"])``,
    :func:`medmtl.models.checkpoint.stored_net`); every reader takes its values from here.
    """

    arch: str = ArchSettings.name
    encoder: str = EncoderSettings.name
    encoder_weights: str | None = EncoderSettings.weights
    encoder_study: str | None = None  # the study's encoder a stand-in replaces (None: itself)
    arch_kwargs: dict[str, Any] = _default({})
    task: str = _MODEL.task
    in_channels: int = ranged(_MODEL.in_channels, 1)
    cls_hidden: int = ranged(_MODEL.cls_hidden, 0)
    cls_dropout: float = ranged(_MODEL.cls_dropout, 0.0, 0.99)
    norm: str = _MODEL.norm
    deep_supervision: bool = _MODEL.deep_supervision
    empty_mask_class: str | None = _MODEL.empty_mask_class
    empty_mask_min_prob: float = ranged(_MODEL.empty_mask_min_prob, 0.0, 1.0, what=A_PROBABILITY)
    empty_mask_keep_above: float | None = ranged(
        _MODEL.empty_mask_keep_above, 0.0, 1.0, what=A_PROBABILITY
    )
    mask_threshold: float = _MODEL.mask_threshold
    postprocess: dict[str, Any] = _default(_MODEL.postprocess)

    def __post_init__(self) -> None:
        threshold = self.mask_threshold
        check_own_fields(self, "model")
        self.mask_threshold = check_net_values(self.task, self.norm, threshold)
        pp = check_fields("model.postprocess", self.postprocess or {}, PostProcessSettings)
        self.postprocess = asdict(PostProcessSettings(**pp))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> NetSettings:
        """Checked network settings (a checkpoint's, after :func:`~medmtl.models.upgrade.
        upgrade`); an unknown key is refused."""
        return cls(**known_keys("model", dict(values), cls))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def study_encoder(self) -> str:
        """The encoder of the study this run stands for (the stand-in's own name otherwise)."""
        return self.encoder_study or self.encoder

    def gate(self) -> GateSettings:
        """The mask gate's thresholds (the class still named, see :meth:`GateSettings.index`)."""
        return GateSettings(
            empty_mask_class=self.empty_mask_class,
            empty_mask_min_prob=self.empty_mask_min_prob,
            empty_mask_keep_above=self.empty_mask_keep_above,
            mask_threshold=self.mask_threshold,
        )


@dataclass(frozen=True)
class GateSettings:
    """Which masks evaluation and prediction empty and where a pixel is lesion: the gate's
    class and thresholds, one object (chosen on validation data by :mod:`medmtl.workflows.gate`)."""

    empty_mask_class: str | None = _MODEL.empty_mask_class
    empty_mask_min_prob: float = _MODEL.empty_mask_min_prob
    empty_mask_keep_above: float | None = _MODEL.empty_mask_keep_above
    mask_threshold: float = _MODEL.mask_threshold

    def index(self, class_names: Sequence[str]) -> int | None:
        """The gated class's index in ``class_names`` (None: no gate), or one line if the
        class is not one of them."""
        if self.empty_mask_class is None:
            return None
        if self.empty_mask_class not in class_names:
            raise ConfigError(
                f"model.empty_mask_class={self.empty_mask_class!r} is not one of the classes "
                f"{list(class_names)}; use one of them or null."
            )
        return list(class_names).index(self.empty_mask_class)


def schema_defaults() -> dict[str, Any]:
    """The ``model/schema`` node: every default but the sub-groups' ``arch`` and ``encoder``."""
    out = ModelSettings().to_dict()
    del out["arch"], out["encoder"]
    return out

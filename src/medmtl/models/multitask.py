"""One network, two heads: smp segmentation model + a classification MLP on the shared encoder."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

from medmtl.errors import ConfigError
from medmtl.models.deep_supervision import DeepSupervision, check_deep_supervision
from medmtl.models.norm import replace_batchnorm
from medmtl.models.registry import ARCHITECTURES, ARCHS
from medmtl.models.shift import ShiftReference
from medmtl.models.unlike import FeatureDistance, pooled
from medmtl.models.weights import OFFLINE_WEIGHTS, load_offline_weights, offline_weights_for
from medmtl.settings.checks import choice
from medmtl.settings.evaluation import AS_TRAINED, GATE_KEYS, check_gate_value
from medmtl.settings.model import GateSettings, NetSettings
from medmtl.settings.train import SHIFT_MAX_DIMS, SHIFT_MAX_REFERENCE

# smp's Mix Transformer encoders have no decoder for these architectures
NO_TRANSFORMER = tuple(a.name for a in ARCHS if not a.mix_transformer)


# the segmentation logit of a gated (empty) mask: sigmoid(-30) ~ 1e-13
EMPTY_LOGIT = -30.0
# the buffers holding the shift test's reference (ShiftReference's fields, then their sizes)
SHIFT_BUFFERS = ("shift_mean", "shift_components", "shift_sample", "shift_size")


class ClassificationHead(nn.Module):
    """Global average pooling of the deepest encoder feature, then an MLP."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if hidden > 0:
            layers += [nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            in_features = hidden
        else:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(in_features, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.mlp(feature)


def gate_masks(
    seg: torch.Tensor,
    cls: torch.Tensor,
    index: int,
    min_prob: float = 0.0,
    keep_above: float | None = None,
) -> torch.Tensor:
    """Empty the masks of the images classified as class ``index`` (normal): the gate.

    ``min_prob``: only where that class's probability is at least this (0: whenever it is the
    arg-max); ``keep_above``: never where the mask's own maximum probability reaches this (the
    segmentation sees a lesion the classifier doubts). Both are chosen on validation
    predictions (:mod:`medmtl.workflows.gate`); the defaults are the plain arg-max gate.
    """
    prob = torch.softmax(cls.float(), dim=1)
    gate = (prob.argmax(dim=1) == index) & (prob[:, index] >= min_prob)
    if keep_above is not None:
        gate = gate & (torch.sigmoid(seg.float()).amax(dim=(1, 2, 3)) < keep_above)
    return torch.where(gate.view(-1, 1, 1, 1), torch.full_like(seg, EMPTY_LOGIT), seg)


def gate_record(net: object, class_names: Sequence[str]) -> dict[str, Any]:
    """What a model card and an exported model's metadata say about how the mask map becomes
    a mask: the gated class (None: no gate), the gate's two thresholds and the mask threshold,
    all inside the network's (and the exported graph's) output."""
    gate: Gate = getattr(net, "gate", None) or Gate()
    index = gate.empty_mask_index
    return {
        "empty_mask_class": None if index is None else class_names[index],
        "empty_mask_min_prob": gate.empty_mask_min_prob,
        "empty_mask_keep_above": gate.empty_mask_keep_above,
        "mask_threshold": gate.mask_threshold,
    }


def threshold_shift(threshold: float) -> float:
    """The logit that moves a mask probability of ``threshold`` to 0.5 (0 for 0.5)."""
    return 0.0 if threshold == 0.5 else math.log(threshold / (1.0 - threshold))


@dataclass(frozen=True)
class Gate:
    """How evaluation and prediction turn the mask map into a mask: a pixel is lesion where
    its probability reaches ``mask_threshold``, and the masks of images classified as class
    ``empty_mask_index`` (None: no gate) are emptied, with the two thresholds of
    :func:`gate_masks`. One object, changed only through :meth:`changed`."""

    empty_mask_index: int | None = None
    empty_mask_min_prob: float = GateSettings.empty_mask_min_prob
    empty_mask_keep_above: float | None = GateSettings.empty_mask_keep_above
    mask_threshold: float = GateSettings.mask_threshold

    def changed(self, values: Mapping[str, Any], num_classes: int) -> Gate:
        """This gate with ``values`` (any of ``empty_mask_index`` and
        :data:`~medmtl.settings.evaluation.GATE_KEYS`), checked; ``as_trained`` keeps one."""
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key == "empty_mask_index":
                if value is not None and not 0 <= value < num_classes:
                    raise ConfigError(f"empty_mask_index={value}: not a class of this model.")
            else:
                value = check_gate_value(choice("gate", key, GATE_KEYS), value)
                if value == AS_TRAINED:
                    continue
            out[key] = value
        return replace(self, **out)

    def apply(self, seg: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        """``seg`` recentred on the mask threshold (so that 0.5 downstream thresholds the map
        at it), then through the class gate where one is set."""
        shift = threshold_shift(self.mask_threshold)
        if shift:
            seg = seg - shift
        if self.empty_mask_index is None or cls is None:
            return seg
        return gate_masks(
            seg, cls, self.empty_mask_index, self.empty_mask_min_prob, self.empty_mask_keep_above
        )


def gated(
    net: nn.Module, seg: torch.Tensor | None, cls: torch.Tensor | None
) -> torch.Tensor | None:
    """``seg`` as evaluation and prediction see it (eval mode only): through the :class:`Gate`
    of ``net`` (a network or an ensemble)."""
    if net.training or seg is None:
        return seg
    return net.gate.apply(seg, cls)


def check_model_names(settings: NetSettings) -> None:
    """Refuse an unknown architecture or encoder and weights that do not fit, in one line and
    without building anything (the task, norm and threshold: :class:`NetSettings` itself)."""
    arch, encoder, weights = settings.arch, settings.encoder, settings.encoder_weights
    if arch not in ARCHITECTURES:
        raise ConfigError(
            f"model.arch.name={arch!r} is not a supported architecture; choose one of "
            f"{', '.join(ARCHITECTURES)} (files in conf/model/arch)."
        )
    if encoder.startswith("tu-"):
        import timm

        known = timm.is_model(encoder[3:])
    else:
        known = encoder in smp.encoders.encoders
    if not known:
        raise ConfigError(
            f"model.encoder.name={encoder!r} is not an encoder smp knows. Pick a file in "
            "conf/model/encoder, a name from smp.encoders.get_encoder_names() or tu-<timm model>."
        )
    offline = OFFLINE_WEIGHTS.get(str(weights)) if weights else None
    if offline is not None and encoder not in offline.encoders:
        fits = offline_weights_for(encoder)
        hint = f"weights={fits}" if fits else "weights=null or imagenet"
        raise ConfigError(
            f"model.encoder.weights={weights} fits only the encoder "
            f"{' or '.join(offline.encoders)}, not {encoder}; use {hint}."
        )
    if encoder.startswith("mit_") and arch in NO_TRANSFORMER:
        ok = ", ".join(a for a in ARCHITECTURES if a not in NO_TRANSFORMER)
        raise ConfigError(
            f"model.arch.name={arch} does not accept the Mix Transformer encoder {encoder}; "
            f"use it with {ok}."
        )
    if settings.deep_supervision:
        check_deep_supervision(arch, settings.task)


class Tempered:
    """A network whose class logits are divided by its ``cls_temperature`` buffer (temperature
    scaling, fitted on held-out data; 1: not calibrated)."""

    cls_temperature: torch.Tensor

    @property
    def temperature(self) -> float:
        """The class logits' temperature (1: not calibrated)."""
        return float(self.cls_temperature)

    def set_temperature(self, value: float) -> None:
        """Divide the class logits by ``value`` from now on (checked: finite and > 0)."""
        value = float(value)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"a temperature must be a positive number, got {value}.")
        self.cls_temperature.fill_(value)


class MultiTaskNet(Tempered, nn.Module):
    """Shared smp encoder with a segmentation decoder and/or a classification head.

    ``task="multitask"`` uses both heads, ``"seg"`` only the decoder and ``"cls"`` only the
    classification head (the decoder is not built), so single-task baselines share this code.
    ``forward`` returns ``{"seg": (B,1,H,W) logits or None, "cls": (B,C) logits or None,
    "unlike_score": (B,) unlike-training score (:mod:`medmtl.models.unlike`, NaN until fitted),
    "features": (B, D) the pooled deepest encoder feature (the shift test's input,
    :mod:`medmtl.models.shift`)}``; the last two in eval mode only (None in training).

    ``empty_mask_index`` (multi-task only): in eval mode, an image classified as this class
    (e.g. ``normal``) gets an empty mask, so the classification gates the segmentation
    (:func:`gate_masks`, with ``empty_mask_min_prob`` and ``empty_mask_keep_above``). It
    does not change training, and an exported model carries it. ``mask_threshold``: in eval
    mode the mask logits are shifted so that probability 0.5 of the output is this threshold
    of the network's own map (a lower threshold finds fainter lesions); training is unchanged.
    ``deep_supervision``: extra mask heads on the decoder's stages, run in training only
    (``out["seg_aux"]``, :mod:`medmtl.models.deep_supervision`).

    The class logits are divided by ``cls_temperature`` (temperature scaling, 1 unless the
    model was calibrated), before the gate: every probability downstream is the calibrated one.
    A temperature never changes the arg-max class.
    """

    def __init__(
        self,
        arch: str = "Unet",
        encoder: str = "resnet18",
        encoder_weights: str | None = None,
        in_channels: int = 1,
        num_classes: int = 3,
        task: str = "multitask",
        cls_hidden: int = 256,
        cls_dropout: float = 0.2,
        arch_kwargs: dict | None = None,
        empty_mask_index: int | None = None,
        empty_mask_min_prob: float = 0.0,
        empty_mask_keep_above: float | None = None,
        norm: str = "batch",
        mask_threshold: float = 0.5,
        deep_supervision: bool = False,
    ):
        super().__init__()
        check_model_names(
            NetSettings(
                arch=arch,
                encoder=encoder,
                encoder_weights=encoder_weights,
                task=task,
                norm=norm,
                mask_threshold=mask_threshold,
                deep_supervision=deep_supervision,
            )
        )
        if empty_mask_index is not None and (
            task != "multitask" or not 0 <= empty_mask_index < num_classes
        ):
            raise ConfigError(
                "model.empty_mask_class needs model.task=multitask and one of the data's classes."
            )
        self.num_classes = num_classes
        self.gate = Gate().changed(
            {
                "empty_mask_index": empty_mask_index,
                "empty_mask_min_prob": empty_mask_min_prob,
                "empty_mask_keep_above": empty_mask_keep_above,
                "mask_threshold": mask_threshold,
            },
            num_classes,
        )
        offline = OFFLINE_WEIGHTS.get(str(encoder_weights)) if encoder_weights else None
        self.task = task
        self.arch = arch
        self.encoder_name = encoder
        try:
            net = smp.create_model(
                arch,
                encoder_name=encoder,
                encoder_weights=None if offline else encoder_weights,
                in_channels=in_channels,
                classes=1,
                **(arch_kwargs or {}),
            )
        except KeyError as exc:
            raise ConfigError(
                f"model.encoder.name={encoder!r} is not an encoder smp knows ({exc.args[0][:80]}...). "
                "Pick a file in conf/model/encoder or a name from smp.encoders.get_encoder_names()."
            ) from exc
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot build {arch} with encoder {encoder}: {exc}") from exc
        if offline is not None:
            load_offline_weights(net.encoder, str(encoder_weights), in_channels)
        # after the weights: their affine parameters are kept, their running statistics dropped
        replace_batchnorm(net, norm)
        self.norm = norm
        self.encoder = net.encoder
        if task == "cls":
            self.decoder = None
            self.segmentation_head = None
        else:
            self.decoder = net.decoder
            self.segmentation_head = net.segmentation_head
        self.deep_supervision = (
            DeepSupervision(self.encoder, self.decoder, arch, in_channels)
            if deep_supervision
            else None
        )
        self.cls_head = (
            ClassificationHead(self.encoder.out_channels[-1], num_classes, cls_hidden, cls_dropout)
            if task != "seg"
            else None
        )
        # temperature scaling of the class logits, fitted on validation data after training
        # (medmtl.models.calibration); 1 until then. A buffer, so checkpoints and ONNX carry it.
        self.register_buffer("cls_temperature", torch.ones((), dtype=torch.float32))
        # how unlike the training data a scan is (medmtl.models.unlike), fitted after training
        self.unlike = FeatureDistance(self.encoder.out_channels[-1], num_classes)
        # the shift test's projection and reference sample (medmtl.models.shift), fitted
        # after training. Fixed sizes (the caps), filled up to shift_size = (images, components):
        # weight averaging and DDP need buffers whose shapes never change
        dims = self.encoder.out_channels[-1]
        for name, shape in (
            ("mean", (dims,)),
            ("components", (SHIFT_MAX_DIMS, dims)),
            ("sample", (SHIFT_MAX_REFERENCE, SHIFT_MAX_DIMS)),
        ):
            self.register_buffer(f"shift_{name}", torch.zeros(shape))
        self.register_buffer("shift_size", torch.zeros(2, dtype=torch.long))

    # what is fitted after training on held-out images, not learned: a fine-tuning starts
    # without it (medmtl-train init_from=) and fits it anew
    FITTED = ("cls_temperature", "unlike.", "shift_")

    def learned_state(self) -> dict[str, torch.Tensor]:
        """The state dict without what is fitted after training (:attr:`FITTED`): the learned
        weights and batch-norm statistics."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(self.FITTED)}

    def start_from(self, other: MultiTaskNet) -> None:
        """Take ``other``'s learned state (:meth:`learned_state`); this network's fitted
        state stays as it is (fresh: uncalibrated). ValueError for another network."""
        try:
            result = self.load_state_dict(other.learned_state(), strict=False)
        except RuntimeError as exc:  # the same names with other shapes
            raise ValueError(str(exc).strip().splitlines()[-1].strip()) from exc
        missing = [k for k in result.missing_keys if not k.startswith(self.FITTED)]
        if missing or result.unexpected_keys:
            keys = missing or result.unexpected_keys
            raise ValueError(f"{len(keys)} weights differ by name, e.g. {keys[0]}")

    @classmethod
    def from_settings(cls, net: NetSettings, class_names: Sequence[str]) -> MultiTaskNet:
        """The network ``net`` describes, for the data's ``class_names`` (the gate's class
        named there becomes its index)."""
        return cls(
            arch=net.arch,
            encoder=net.encoder,
            encoder_weights=net.encoder_weights,
            in_channels=net.in_channels,
            num_classes=len(class_names),
            task=net.task,
            cls_hidden=net.cls_hidden,
            cls_dropout=net.cls_dropout,
            arch_kwargs=net.arch_kwargs,
            empty_mask_index=net.gate().index(class_names),
            empty_mask_min_prob=net.empty_mask_min_prob,
            empty_mask_keep_above=net.empty_mask_keep_above,
            norm=net.norm,
            mask_threshold=net.mask_threshold,
            deep_supervision=net.deep_supervision,
        )

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # checkpoints written before calibration existed have no temperature: they are uncalibrated
        state_dict.setdefault(prefix + "cls_temperature", torch.ones((), dtype=torch.float32))
        # ... and no unlike-training score: it stays unfitted (NaN)
        for name, value in self.unlike.state_dict().items():
            state_dict.setdefault(f"{prefix}unlike.{name}", value.clone())
        # ... and no shift reference (empty)
        if prefix + "shift_size" not in state_dict:
            for name in SHIFT_BUFFERS:
                state_dict[prefix + name] = torch.zeros_like(getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        features = self.encoder(x)
        seg = aux = None
        if self.decoder is not None:
            if self.deep_supervision is not None:
                self.deep_supervision.start(capture=self.training)
            decoded = self.decoder(features)
            seg = self.segmentation_head(decoded)
            if self.deep_supervision is not None and self.training:
                aux = self.deep_supervision.maps(tuple(seg.shape[-2:]))
        cls = None
        if self.cls_head is not None:
            cls = self.cls_head(features[-1]) / self.cls_temperature
        # the unlike score and the pooled features (for the shift test) in evaluation only
        # (training has no use for them)
        vector = None if self.training else pooled(features[-1])
        unlike = None if vector is None else self.unlike(vector)
        out = {"seg": gated(self, seg, cls), "cls": cls, "unlike_score": unlike, "features": vector}
        if aux is not None:  # training with deep supervision: the stages' mask logits
            out["seg_aux"] = aux
        return out

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) the deepest encoder feature averaged over space (what the unlike score uses)."""
        return pooled(self.encoder(x)[-1])

    def shift_reference(self) -> ShiftReference | None:
        """The shift test's projection and reference sample (None: not fitted)."""
        n, k = (int(v) for v in self.shift_size)
        if n == 0:
            return None
        return ShiftReference(
            self.shift_mean.double().cpu().numpy(),
            self.shift_components[:k].double().cpu().numpy(),
            self.shift_sample[:n, :k].double().cpu().numpy(),
        )

    def shift_references(self) -> list[ShiftReference]:
        """The shift test's references: this network's, if fitted (an ensemble: its members')."""
        ref = self.shift_reference()
        return [] if ref is None else [ref]

    def set_shift_reference(self, ref: ShiftReference | None) -> None:
        """Hold ``ref`` (None: none) in the buffers a checkpoint carries, in place."""
        for name in SHIFT_BUFFERS:
            getattr(self, name).zero_()
        if ref is None:
            return
        n, k = ref.sample.shape
        if k > SHIFT_MAX_DIMS or n > SHIFT_MAX_REFERENCE or ref.mean.shape != self.shift_mean.shape:
            raise ConfigError(
                f"a shift reference of {n} images on {k} components of {ref.mean.shape[0]} "
                f"features does not fit this network (at most {SHIFT_MAX_REFERENCE} images, "
                f"{SHIFT_MAX_DIMS} components, {self.shift_mean.shape[0]} features)."
            )
        self.shift_mean.copy_(torch.as_tensor(ref.mean))
        self.shift_components[:k].copy_(torch.as_tensor(ref.components))
        self.shift_sample[:n, :k].copy_(torch.as_tensor(ref.sample))
        self.shift_size.copy_(torch.tensor([n, k]))

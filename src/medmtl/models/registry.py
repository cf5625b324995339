"""The architectures and encoders medmtl knows: one description each, read by the config
checks, the network, the tables and the tests that hold ``conf/model`` to it.

An architecture is an smp decoder (``conf/model/arch/<config>.yaml`` names it); an encoder
entry names a study backbone or a light CPU one (``conf/model/encoder/<config>.yaml``). Any
other smp or ``tu-<timm>`` encoder can still be used by name; it is just not one of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medmtl.settings.model import TASKS  # noqa: F401  (models.TASKS)


def arch_key(name: Any) -> str:
    """An architecture's name as run records and the study file spell it (lower case, no
    underscores): ``UnetPlusPlus`` -> ``unetplusplus``."""
    return str(name or "").lower().replace("_", "")


def encoder_key(name: Any) -> str:
    """An encoder's name without timm's ``tu-`` prefix (how the study file spells it)."""
    return str(name or "").removeprefix("tu-")


@dataclass(frozen=True)
class Architecture:
    """An smp architecture and what it accepts."""

    name: str  # smp's class name: model.arch.name
    display: str  # as the study's tables print it
    config: str  # conf/model/arch/<config>.yaml
    in_study: bool = False  # a row of the study's architecture x backbone table
    mix_transformer: bool = True  # smp has a decoder for its Mix Transformer (mit_*) encoders
    deep_supervision: bool = False  # a decoder of stages that model.deep_supervision scores
    min_size: int = 32  # the smallest input side it accepts (data.image_size)

    @property
    def key(self) -> str:
        return arch_key(self.name)


@dataclass(frozen=True)
class Encoder:
    """An encoder with a config file of its own."""

    name: str  # model.encoder.name (smp's, or tu-<timm model>)
    display: str
    config: str  # conf/model/encoder/<config>.yaml
    in_study: bool = False  # a column of the study's architecture x backbone table

    @property
    def key(self) -> str:
        return encoder_key(self.name)


ARCHS = (
    Architecture("Unet", "Unet", "unet", in_study=True, deep_supervision=True),
    Architecture(
        "UnetPlusPlus", "Unet++", "unetplusplus", True, mix_transformer=False, deep_supervision=True
    ),
    Architecture("MAnet", "MAnet", "manet", deep_supervision=True),
    Architecture("Linknet", "Linknet", "linknet", mix_transformer=False, deep_supervision=True),
    Architecture("FPN", "FPN", "fpn", in_study=True),
    Architecture("PSPNet", "PSPNet", "pspnet"),
    Architecture("PAN", "PAN", "pan", min_size=128),
    Architecture("DeepLabV3", "DeepLabV3", "deeplabv3"),
    Architecture("DeepLabV3Plus", "DeepLabV3+", "deeplabv3plus", in_study=True),
)
# the study's table order: Unet, Unet++, FPN, DeepLabV3+
STUDY_ARCH_ORDER = ("Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus")

ENCODERS = (
    Encoder("resnet50", "ResNet50", "resnet50", in_study=True),
    Encoder("resnext50_32x4d", "ResNeXt50", "resnext50_32x4d", in_study=True),
    Encoder("tu-wide_resnet50_2", "WideResNet50", "wide_resnet50_2", in_study=True),
    Encoder("tu-efficientnet_b4", "EfficientNet-b4", "efficientnet_b4", in_study=True),
    Encoder("resnet18", "ResNet18", "resnet18"),
    Encoder("mobilenet_v2", "MobileNetV2", "mobilenet_v2"),
    Encoder("tu-efficientnet_lite0", "EfficientNet-Lite0", "efficientnet_lite0"),
    Encoder("tu-efficientnet_lite1", "EfficientNet-Lite1", "efficientnet_lite1"),
    Encoder("tu-efficientnet_lite2", "EfficientNet-Lite2", "efficientnet_lite2"),
    Encoder("mit_b0", "MiT-B0", "mit_b0"),
    Encoder("mit_b2", "MiT-B2", "mit_b2"),
)

ARCHITECTURES = tuple(a.name for a in ARCHS)  # model.arch.name's allowed values


def architecture(name: str) -> Architecture | None:
    """The architecture of ``model.arch.name`` (or of its key, e.g. ``unetplusplus``)."""
    return next((a for a in ARCHS if a.key == arch_key(name)), None)


def encoder(name: str) -> Encoder | None:
    """The encoder entry of ``model.encoder.name`` (with or without ``tu-``), if it has one."""
    return next((e for e in ENCODERS if e.key == encoder_key(name)), None)


def study_archs() -> list[str]:
    """The study's architectures (keys), in its table's order."""
    return [architecture(n).key for n in STUDY_ARCH_ORDER]  # type: ignore[union-attr]


def study_encoders() -> list[str]:
    """The study's backbones (keys), in its table's order."""
    return [e.key for e in ENCODERS if e.in_study]

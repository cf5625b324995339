"""The ``data`` settings: every ``data.*`` key, its default and what it belongs to.

:class:`DataSettings` is the one description of a data config. Its defaults are the
``data/schema`` every data set's YAML starts from (the keys a data set must set itself, such as
``root`` or ``busbra``, are known here but left to its file); the data module, the combined data
module, the ensemble's member check and the checkpoint's preprocessing read their key lists and
defaults from it, so a new data setting is added here and nowhere else (plus its use).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from medmtl.errors import ConfigError
from medmtl.settings.checks import check_fields, ranged

SECTIONS = ("source", "preprocess", "split", "loader", "module", "multi")
# how an N-bit image becomes 8-bit (medmtl.preprocess.intensity.to_uint8)
CONVERSIONS = ("full", "window", "percentile")


def _key(
    section: str,
    default: Any = None,
    *,
    member: bool = False,
    common: bool = True,
    **limits: Any,
) -> Any:
    """A data setting of ``section``. ``member``: it decides what an ensemble member sees at
    evaluation (members must agree on it); ``common``: every data set has it (it is in the
    schema's defaults) rather than only the data sets whose file sets it; ``limits``: its
    range or choices (:func:`~medmtl.settings.checks.ranged`)."""
    return ranged(default, **limits, section=section, member=member, common=common)


def _p(default: float) -> Any:
    """A probability."""
    return ranged(default, 0, 1)


def _pos(default: float, low: float = 0) -> Any:
    """A size, limit or count: ``low`` or more."""
    return ranged(default, low)


@dataclass(frozen=True)
class Conversion:
    """How an N-bit image becomes 8-bit (see :func:`medmtl.preprocess.intensity.to_uint8`):
    ``full`` | ``window`` | ``percentile``, exactly as medmtl-preprocess.

    ``method="window"`` without ``center``/``width`` uses the DICOM file's own window.
    """

    method: str = ranged("full", choices=CONVERSIONS)
    center: float | None = None
    width: float | None = ranged(None, 0)
    low: float = ranged(0.5, 0, 100)
    high: float = ranged(99.5, 0, 100)


@dataclass
class Augment:
    """Random train augmentation (probabilities and their ranges); no vertical flip: the skin
    line is at the top."""

    hflip: float = _p(0.5)
    vflip: float = _p(0.0)
    affine: float = _p(0.5)
    scale: float = ranged(0.1, 0, 1)
    translate: float = ranged(0.05, 0, 1)
    rotate: float = _pos(10.0)
    brightness_contrast: float = _p(0.5)
    brightness_limit: float = ranged(0.15, 0, 1)
    contrast_limit: float = ranged(0.15, 0, 1)
    clahe: float = _p(0.0)
    clahe_clip_limit: float = _pos(3.0)
    gamma: float = _p(0.0)
    # zoom: random crop of crop_scale..100 % of the area, resized back
    crop: float = _p(0.0)
    crop_scale: float = ranged(0.5, 0, 1)
    # lesion-centred zoom: a square of lesion_crop_side of the side holding lesion pixels (any
    # square on a lesion-free image), resized back
    lesion_crop: float = _p(0.0)
    lesion_crop_side: float = ranged(0.6, 0, 1)
    # ultrasound speckle: multiplicative per-pixel noise of up to ±speckle_limit
    speckle: float = _p(0.0)
    speckle_limit: float = ranged(0.2, 0, 1)
    # time-gain compensation: a gain linear in depth, 1 ± tgc_limit from top to bottom (mean 1)
    tgc: float = _p(0.0)
    tgc_limit: float = ranged(0.5, 0, 1)
    # Gaussian blur (odd kernel up to blur_limit px) and resolution loss (down to downscale_min
    # of the side and back): other probes, frequencies and scanners
    blur: float = _p(0.0)
    blur_limit: int = _pos(5, 3)
    downscale: float = _p(0.0)
    downscale_min: float = ranged(0.5, 0, 1)
    # frequency-amplitude mixing between the images of a training batch (FACT): the image's
    # Fourier phase with up to amplitude_mix_ratio of another image's amplitude
    amplitude_mix: float = _p(0.0)
    amplitude_mix_ratio: float = ranged(1.0, 0, 1)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Augment:
        """The augmentation of ``data.augment``, checked (missing keys: the defaults; an unknown
        key is refused with the known ones)."""
        return cls(**check_fields("data.augment", dict(values or {}), cls))


SPLIT_UNITS = ("group", "image")  # what a split keeps together (data.split.by)


@dataclass
class SplitDraw:
    """How the split is drawn (class-stratified, written once to the split file).

    ``folds`` None: one fixed train/val/test split. ``folds`` K: cross-validation, a published
    protocol's: every image is in one of K stratified folds, the test side is fold
    ``data.fold``, and the validation side is ``val_fraction`` **of the other folds** (model
    selection never sees the held-out fold). ``by``: what stays on one side, medmtl's
    near-duplicate groups (and the data set's patients) or each image alone (a protocol that
    splits by image).
    """

    seed: int = ranged(42, 0)
    val_fraction: float = ranged(0.1, 0, 1)
    test_fraction: float = ranged(0.2, 0, 1)
    folds: int | None = ranged(None, 2)
    by: str = ranged("group", choices=SPLIT_UNITS)


@dataclass
class Dedup:
    """Near-duplicate groups: Pearson correlation of thumb_size² grey thumbnails."""

    threshold: float = ranged(0.95, 0, 1)
    thumb_size: int = _pos(32, 4)


@dataclass
class Phantom:
    """``data.phantom``: the generated ultrasound-like phantom (medmtl.data.phantom), made once
    per setting into the cache."""

    seed: int = ranged(0, 0)
    size: int = _pos(256, 32)  # the side of the generated images
    counts: dict[str, int] = field(
        default_factory=lambda: {"normal": 80, "benign": 140, "malignant": 140}
    )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> Phantom:
        """``data.phantom``, checked (missing keys: the defaults; an unknown key refused)."""
        return cls(**check_fields("data.phantom", dict(values or {}), cls))


# where a data module caches when its settings name no folder (a data dict written by hand;
# a composed config's data.cache_dir is paths.cache_dir)
CACHE_DIR = ".cache"


@dataclass
class Progressive:
    """Progressive resizing: the first ``fraction`` of the epochs trains on batches resized
    down, from ``start_size`` (a multiple of 32 below image_size) in steps of 32; the rest, and
    every evaluation, at image_size (start_size None: off)."""

    start_size: int | None = _pos(None, 32)
    fraction: float = ranged(0.5, 0, 1)


@dataclass
class DataSettings:
    """Every ``data.*`` setting with its default (``conf/data/*.yaml`` set what differs)."""

    # -- which data set (each data set's file names it and where it is)
    name: str = _key("source", "busi", member=True, common=False)
    source: str = _key(
        "source", "folder", member=True, common=False
    )  # see medmtl.data.sources.SOURCES
    root: str | None = _key("source", common=False)
    manifest: str | None = _key("source", common=False)  # data=manifest: the CSV listing
    columns: dict | None = _key("source", member=True, common=False)  # data=manifest's columns
    busbra: dict | None = _key("source", member=True, common=False)  # data=busbra's folds
    phantom: dict | None = _key("source")  # data=phantom: seed, size, counts (Phantom)
    classes: list = _key("source", ["normal", "benign", "malignant"], member=True)
    # the data set's labels -> data.classes, e.g. {B: benign, M: malignant}; None: same names
    class_map: dict | None = _key("source", member=True)
    mask_optional_classes: list = _key("source", [], member=True)
    # a class folder without images stops training with its name; true trains without it
    drop_empty_classes: bool = _key("source", False)
    # class folders restricted to a published image list (class;id rows, e.g. the 450 images
    # of curated BUSI: lists/curated_busi.csv); None: every image
    image_list: str | None = _key("source", member=True)
    # -- what the network sees (PreprocessSettings; a model's, not a data set's)
    image_size: int = _key("preprocess", 160, member=True)  # a multiple of 32
    conversion: Conversion = _key("preprocess", Conversion(), member=True)
    # deterministic CLAHE before resizing (cached), see also augment.clahe
    clahe: bool = _key("preprocess", False, member=True)
    clahe_clip_limit: float = _key("preprocess", 2.0, member=True, low=0)
    clahe_tile_grid: int = _key("preprocess", 8, member=True, low=1)
    # per-image intensity standardisation of the network input ((x - mean) / std of each
    # image) instead of one fixed mean/std: a scanner's brightness and contrast do not reach
    # the network
    standardize: bool = _key("preprocess", False, member=True)
    # -- the split (written once to split_file) and the fold used of it
    split_file: str | None = _key("split", member=True, common=False)
    split: SplitDraw = _key("split", SplitDraw(), member=True)
    dedup: Dedup = _key("split", Dedup(), member=True)
    num_folds: int | None = _key("split", low=2)  # k-fold over train+val (test untouched)
    # the fold used: of num_folds (its validation side), or of split.folds (its test side)
    fold: int = _key("split", 0, low=0)
    # -- batches
    batch_size: int = _key("loader", 16, low=1)
    eval_batch_size: int | None = _key("loader", 32, low=1)
    num_workers: int = _key("loader", 0, low=0)
    # page-locked batches, copied to the GPU without a staging copy (only where CUDA is)
    pin_memory: bool = _key("loader", False)
    # where the training augmentation runs: in the loader workers (every augmentation), or on
    # the device that trains, batch-wise after the transfer (flips, affine, brightness/contrast:
    # medmtl.data.device_augment), so that the workers only collate cached images
    augment_on: str = _key("loader", "workers", choices=("workers", "device"))
    load_workers: int = _key("loader", 2, low=0)
    # draw every class equally often in training (WeightedRandomSampler) instead of shuffling
    balanced_sampling: bool = _key("loader", False)
    # draw these classes more (or less) often, on top of the above: {malignant: 2}; None: off
    class_sampling: dict | None = _key("loader")
    # -- training-time settings of the module
    augment: Augment = _key("module", Augment())
    # use only about this many images per split (stratified), for quick runs; None: all
    subset: int | None = _key("module", member=True, low=1)
    cache_dir: str = _key("module", "${paths.cache_dir}")
    progressive_resize: Progressive = _key("module", Progressive())
    # -- data=multi: the data sets trained together, and one left out for testing (LODO)
    sets: dict | None = _key("multi", common=False)
    leave_out: str | None = _key("multi", member=True, common=False)
    # the share of training draws from a data set, e.g. {site: 0.5} (a few images of a new
    # scanner with the source's replayed); the others share the rest by size. None: by size
    set_sampling: dict | None = _key("multi", common=False)


DATA = DataSettings()  # the defaults, to read one: DATA.image_size


def keys(section: str | None = None, *, member: bool | None = None) -> tuple[str, ...]:
    """The ``data.*`` keys (of ``section``; only those that decide what a member sees with
    ``member=True``), in schema order."""
    if section is not None and section not in SECTIONS:
        raise ValueError(section)
    return tuple(
        f.name
        for f in fields(DataSettings)
        if (section is None or f.metadata["section"] == section)
        and (member is None or f.metadata["member"] == member)
    )


def schema_defaults() -> dict[str, Any]:
    """What every data set's YAML starts from (``data/schema``): the common keys' defaults."""
    out = asdict(DATA)
    return {f.name: out[f.name] for f in fields(DataSettings) if f.metadata["common"]}


# the data.augment transforms (their probabilities) that exist only in the workers' pipeline
# (medmtl.data.device_augment has the others; amplitude_mix is the training step's, anyway)
CPU_ONLY_AUGMENTS = ("clahe", "gamma", "crop", "lesion_crop", "speckle", "tgc", "blur", "downscale")


def check_device_augment(augment: Augment, key: str = "data") -> None:
    """``augment_on=device``: refuse, in one line, an augmentation the device path lacks."""
    for name in CPU_ONLY_AUGMENTS:
        if getattr(augment, name) > 0:
            raise ConfigError(
                f"{key}.augment_on=device has hflip, vflip, affine and brightness_contrast; "
                f"{key}.augment.{name} runs only in the loader workers: set "
                f"{key}.augment_on=workers or {key}.augment.{name}=0."
            )


def check_data(values: dict[str, Any], key: str = "data") -> None:
    """Every ``data.*`` value by type, range and choices, one line for the first wrong one
    (:func:`~medmtl.settings.checks.check_fields`); the data sets of ``data=multi`` too."""
    check_fields(key, values, DataSettings)
    check_image_size(values.get("image_size", DATA.image_size), f"{key}.image_size")
    check_folds(values, key)
    if values.get("augment_on") == "device":
        check_device_augment(Augment.from_dict(values.get("augment")), key)
    for name, member in (values.get("sets") or {}).items():
        check_data(member, f"{key}.sets.{name}")


def check_folds(values: Mapping[str, Any], key: str = "data") -> None:
    """``data.fold`` inside the folds it picks from, and one kind of folds at a time."""
    cv = (values.get("split") or {}).get("folds")
    inner = values.get("num_folds")
    if cv and inner:
        raise ConfigError(
            f"{key}.split.folds={cv} (cross-validation: the test side is a fold) and "
            f"{key}.num_folds={inner} (folds of train+val, a fixed test side) exclude each "
            f"other; set one of them to null."
        )
    count = cv or inner
    fold = values.get("fold", DATA.fold)
    if count and isinstance(fold, int) and not 0 <= fold < count:
        which = "split.folds" if cv else "num_folds"
        raise ConfigError(
            f"{key}.fold={fold}: must be in 0..{count - 1} for {key}.{which}={count}."
        )


def check_image_size(image_size: object, key: str = "data.image_size") -> None:
    """The network input side (setting ``key``): a positive multiple of 32 (the encoders
    downsample by 32)."""
    try:
        size = int(image_size)  # type: ignore[arg-type]
        ok = size == float(image_size) and size >= 32 and size % 32 == 0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        size, ok = 0, False
    if not ok:
        raise ConfigError(
            f"{key}={image_size}: must be a positive multiple of 32 (encoders "
            f"downsample by 32); try {max(32, round(size / 32) * 32)}."
        )

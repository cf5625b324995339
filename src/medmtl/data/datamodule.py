"""The LightningDataModule: index -> cached arrays -> leakage-safe split -> augmented batches."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler, get_worker_info

from medmtl.config import project_root
from medmtl.data.cache import CachedCase, load_cases
from medmtl.data.duplicates import combine_groups, find_groups
from medmtl.data.index import Case, DatasetIndex
from medmtl.data.sources import DataSource, Source, source_of
from medmtl.data.splits import (
    SPLITS,
    SplitSettings,
    check_given_split,
    complete_split,
    cv_split,
    kfold_train_val,
    make_cv_folds,
    make_split,
    read_split_file,
    repair_given_split,
    train_val_mixed,
    write_split_file,
)
from medmtl.data.transforms import BATCH_AUGMENTS, eval_transform, raw_transform, train_transform
from medmtl.errors import ConfigError, DataError, summarize
from medmtl.preprocess.pipeline import PreprocessSettings
from medmtl.settings.data import CACHE_DIR, DATA, Augment, check_image_size
from medmtl.settings.data import keys as data_keys

log = logging.getLogger(__name__)


class ArrayDataset(Dataset):
    """Cached grey images and masks with an albumentations transform.

    albumentations 2 keeps its own random state, untouched by ``seed_everything``; it is
    seeded here from torch's RNG so that runs repeat with the same seed, and re-seeded once in
    each DataLoader worker (whose torch seed differs per worker and per epoch).
    """

    def __init__(self, items: Sequence[CachedCase], labels: Sequence[int], transform) -> None:
        self.items = list(items)
        self.labels = list(labels)
        self.transform = transform
        self.transform.set_random_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
        self._worker_seeded: int | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        info = get_worker_info()
        if info is not None and self._worker_seeded != info.seed:
            self.transform.set_random_seed(info.seed % 2**31)
            self._worker_seeded = info.seed
        item = self.items[i]
        # the instance labels go through the same (nearest-neighbour) geometric transform
        out = self.transform(image=item.image[..., None], mask=item.lesions)
        lesions = torch.as_tensor(out["mask"], dtype=torch.uint8).unsqueeze(0)
        return {
            "image": out["image"].float(),
            "mask": (lesions > 0).float(),
            "lesions": lesions,
            "label": torch.tensor(self.labels[i], dtype=torch.long),
            "index": i,
        }


def split_file_advice(path: Path) -> str:
    """What to do with a newly written split file: commit the project's own, keep any other."""
    committed = (project_root() / "splits").resolve()
    if committed in path.resolve().parents:
        return "commit it so every run uses the same cases."
    return (
        "every later run of this data set uses it; keep it (deleting it makes a new split, "
        "and results stop being comparable)."
    )


@dataclass(frozen=True)
class LoaderSettings:
    """Batches: sizes, loader processes, the threads that fill the cache, class balancing."""

    batch_size: int = DATA.batch_size
    eval_batch_size: int | None = DATA.eval_batch_size  # None: batch_size
    num_workers: int = DATA.num_workers
    pin_memory: bool = DATA.pin_memory
    augment_on: str = DATA.augment_on
    load_workers: int = DATA.load_workers
    balanced_sampling: bool = DATA.balanced_sampling
    # class name -> how many times more often its images are drawn (e.g. {malignant: 2})
    class_sampling: Mapping[str, float] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoaderSettings:
        """The loader settings of a data config (``data.batch_size``, ...)."""
        return cls(
            batch_size=int(d.get("batch_size", DATA.batch_size)),
            eval_batch_size=d.get("eval_batch_size", DATA.eval_batch_size),
            num_workers=int(d.get("num_workers", DATA.num_workers)),
            pin_memory=bool(d.get("pin_memory", DATA.pin_memory)),
            augment_on=str(d.get("augment_on", DATA.augment_on)),
            load_workers=int(d.get("load_workers", DATA.load_workers)),
            balanced_sampling=bool(d.get("balanced_sampling", DATA.balanced_sampling)),
            class_sampling=dict(d["class_sampling"]) if d.get("class_sampling") else None,
        )

    def check_classes(self, classes: Sequence[str]) -> None:
        """Refuse ``data.class_sampling`` for a class the data set does not have, or a factor
        that is not a positive number (one line, before any data is read)."""
        for name, factor in (self.class_sampling or {}).items():
            if name not in classes:
                raise ConfigError(
                    f"data.class_sampling.{name}: not a class of this data set "
                    f"({', '.join(classes)}); use one of them."
                )
            try:
                ok = float(factor) > 0 and math.isfinite(float(factor))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ConfigError(
                    f"data.class_sampling.{name}={factor}: a factor > 0, e.g. 2 (drawn twice "
                    "as often)."
                )


def class_shares(
    counts: Sequence[int],
    classes: Sequence[str],
    balanced: bool = False,
    boost: Mapping[str, float] | None = None,
) -> np.ndarray:
    """The expected share of training draws of each class: as in the data (``counts``), or
    equal (``balanced``), then multiplied by ``boost`` (class name -> factor) and normalised.
    A class without images gets no share."""
    counts = np.asarray(counts, dtype=np.float64)
    share = (counts > 0).astype(np.float64) if balanced else counts.copy()
    for name, factor in (boost or {}).items():
        share[list(classes).index(name)] *= float(factor)
    return share / share.sum()


# the data settings that belong to the network rather than to a data set (PreprocessSettings):
# a model evaluated on another data set, or several data sets trained together, use one
PREPROCESS_KEYS = data_keys("preprocess")
# every data.* key of one data set (data=multi's own keys aside)
DATA_KEYS = frozenset(data_keys()) - frozenset(data_keys("multi"))


class CasesDataModule(L.LightningDataModule):
    """What every medmtl data module does with its cases once they are loaded: their split,
    the model's class names, the data sets and loaders of each split.

    :class:`MedDataModule` reads one data set; :class:`~medmtl.data.multi.MultiDataModule`
    holds several of them. Both fill ``index``, ``items``, ``split`` and ``groups`` in
    :meth:`load` (every image, unsplit) and :meth:`setup` (split).
    """

    def __init__(
        self,
        name: str,
        classes: Sequence[str],
        preprocess: PreprocessSettings | None = None,
        loader: LoaderSettings | None = None,
        augment: dict | None = None,
        cache_dir: str | None = CACHE_DIR,
    ) -> None:
        super().__init__()
        self.preprocess = preprocess or PreprocessSettings()
        check_image_size(self.preprocess.image_size)
        self.loader = loader or LoaderSettings()
        self.name = name
        self.classes = tuple(classes)
        self.loader.check_classes(self.classes)
        self.augment = dict(augment or {})
        self.cache_dir = cache_dir
        self.index: DatasetIndex | None = None
        self.own_classes: tuple[str, ...] = self.classes
        self._split_done = False
        self.items: list[CachedCase] = []
        self.split: list[str] = []
        self.groups: list[int] = []

    def load(self) -> None:
        """Index and load every image, unsplit (``split=all``)."""
        raise NotImplementedError

    def split_files(self) -> dict[str, Path]:
        """The split files read or written in ``setup``, by data set name."""
        raise NotImplementedError

    def relabel(self, classes: Sequence[str], mapping: Mapping[str, str]) -> None:
        """Label the cases in another class list (a model's) through ``mapping`` (data class ->
        class); each case keeps its own ``class_name``."""
        self.load()
        classes = list(classes)
        self.index.cases = [
            replace(c, label=classes.index(mapping[c.class_name])) for c in self.index.cases
        ]
        self.own_classes = tuple(dict.fromkeys(mapping[c] for c in self.own_classes))
        self.classes = tuple(classes)

    def split_classes(self, split: str) -> list[str]:
        """The classes the data set defines (in the names of :meth:`relabel`): what a model
        with more classes is scored over on this split."""
        return list(self.own_classes)

    # -- access -----------------------------------------------------------------------------
    def cases(self, split: str) -> list[Case]:
        """The cases of one split (``all``: every case), in index order."""
        self._check_split(split)
        return [c for i, c in enumerate(self.index.cases) if self._in(split, i)]

    def cached(self, split: str) -> list[CachedCase]:
        """The cached arrays of one split's cases, in :meth:`cases` order."""
        self._check_split(split)
        return [c for i, c in enumerate(self.items) if self._in(split, i)]

    def split_groups(self, split: str) -> list[int]:
        """The group (near copies, the data set's patients) of each of one split's cases, in
        :meth:`cases` order."""
        self._check_split(split)
        return [g for i, g in enumerate(self.groups) if self._in(split, i)]

    def _in(self, split: str, i: int) -> bool:
        return split == "all" or self.split[i] == split

    def dataset(self, split: str, train: bool = False) -> ArrayDataset:
        self._check_split(split)
        idx = [i for i in range(len(self.index.cases)) if self._in(split, i)]
        p = self.preprocess
        if train and self.loader.augment_on == "device":  # on_after_batch_transfer does it
            tf = raw_transform()
        elif train:
            tf = train_transform(
                p.image_size,
                p.mean,
                p.std,
                standardize=p.standardize,
                **{k: v for k, v in self.augment.items() if k not in BATCH_AUGMENTS},
            )
        else:
            tf = eval_transform(p.mean, p.std, p.standardize)
        return ArrayDataset(
            [self.items[i] for i in idx], [self.index.cases[i].label for i in idx], tf
        )

    def _check_split(self, split: str) -> None:
        if split not in (*SPLITS, "all"):
            raise ConfigError(
                f"split={split!r} is unknown; choose one of {', '.join(SPLITS)} or all."
            )
        if split == "all":
            self.load()
            return
        if not self._split_done:
            self.setup()
        if split not in self.split:
            raise DataError(
                f"{self.name}: the {split} split has no images; choose another split or split=all."
            )

    def draw_weights(self, labels: Sequence[int], split: str) -> np.ndarray | None:
        """Each training image's chance of a draw (summing to 1), or None to shuffle: every
        class drawn with its share (``balanced_sampling``, ``class_sampling``)."""
        if not (self.loader.balanced_sampling or self.loader.class_sampling):
            return None
        counts = np.bincount(labels, minlength=len(self.classes))
        share = class_shares(
            counts, self.classes, self.loader.balanced_sampling, self.loader.class_sampling
        )
        return np.array([share[c] / counts[c] for c in labels])

    def dataloader(self, split: str, train: bool = False) -> DataLoader:
        ds = self.dataset(split, train)
        sampler = None
        weights = self.draw_weights(ds.labels, split) if train else None
        if weights is not None:  # drawn with replacement, one epoch = len(ds) draws
            sampler = WeightedRandomSampler(weights.tolist(), num_samples=len(ds), replacement=True)
        return DataLoader(
            ds,
            batch_size=self.loader.batch_size if train else self.eval_batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train and self._drop_last(len(ds)),
            num_workers=self.loader.num_workers,
            persistent_workers=self.loader.num_workers > 0,
            pin_memory=self.loader.pin_memory and torch.cuda.is_available(),
        )

    def _drop_last(self, n: int) -> bool:
        """Drop a last, smaller training batch (PAN and DeepLab BatchNorm fail on a batch of one
        image), unless that would leave a rank without any batch: under DDP each rank sees
        only its share of the images."""
        world = getattr(self.trainer, "world_size", 1)  # no trainer (None): one process
        return math.ceil(n / max(1, world)) > self.loader.batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.loader.eval_batch_size or self.loader.batch_size

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``data.augment_on=device``: a training batch, still 0..255 and unaugmented, is
        augmented and normalised where it now is (the GPU); every other batch is as it came."""
        trainer = self.trainer
        if self.loader.augment_on != "device" or trainer is None or not trainer.training:
            return batch
        from medmtl.data import device_augment as da

        image = batch["image"]
        params = da.draw(Augment.from_dict(self.augment), image.shape[0], tuple(image.shape[2:]))
        image, mask = da.apply(image, batch["mask"], params)
        p = self.preprocess
        # training uses the mask only: the unaugmented instance labels would not match it
        rest = {k: v for k, v in batch.items() if k != "lesions"}
        return {**rest, "image": da.normalise(image, p.mean, p.std, p.standardize), "mask": mask}

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")


class MedDataModule(CasesDataModule):
    """One data set: class folders (``data=busi``, ``data=folder``), a manifest, BUS-BRA or
    the phantom, read through its entry in the source registry (:mod:`medmtl.data.sources`).

    Built from a data config by :meth:`from_config`; the preprocessing is one
    :class:`PreprocessSettings`, which the checkpoint stores.
    """

    def __init__(
        self,
        source: DataSource,
        preprocess: PreprocessSettings | None = None,
        split: SplitSettings | None = None,
        loader: LoaderSettings | None = None,
        augment: dict | None = None,
        subset: int | None = None,
        cache_dir: str | None = CACHE_DIR,
    ) -> None:
        kind: Source = source_of(source)  # checks what the source needs, before any file
        super().__init__(
            source.name, kind.classes or source.classes, preprocess, loader, augment, cache_dir
        )
        self.data = source
        self.kind = kind
        self._split_file: Path | None = None
        self.split_settings = split or SplitSettings()
        self.subset = subset

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | DictConfig) -> MedDataModule:
        """The data module a data config (``conf/data/*.yaml``, or a checkpoint's copy) describes."""
        d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        if d.get("source") == "multi":
            raise ConfigError(
                "data=multi is several data modules: build it with "
                "medmtl.data.build.datamodule_from_config."
            )
        unknown = sorted(set(d) - DATA_KEYS)
        if unknown:
            raise ConfigError(
                f"data.{unknown[0]}: not a data setting; known: {', '.join(sorted(DATA_KEYS))}."
            )
        split, dedup = dict(d.get("split") or {}), dict(d.get("dedup") or {})
        defaults = SplitSettings()
        return cls(
            source=DataSource(
                name=d.get("name", DATA.name),
                source=d.get("source", DATA.source),
                root=d.get("root"),
                classes=tuple(d.get("classes") or DataSource.classes),
                mask_optional_classes=tuple(d.get("mask_optional_classes") or ()),
                drop_empty_classes=bool(d.get("drop_empty_classes", DATA.drop_empty_classes)),
                phantom=d.get("phantom"),
                manifest=d.get("manifest"),
                columns=d.get("columns"),
                class_map=d.get("class_map"),
                busbra=d.get("busbra"),
                image_list=d.get("image_list"),
            ),
            preprocess=PreprocessSettings.from_dict(d),
            split=SplitSettings(
                file=d.get("split_file"),
                seed=int(split.get("seed", defaults.seed)),
                val_fraction=float(split.get("val_fraction", defaults.val_fraction)),
                test_fraction=float(split.get("test_fraction", defaults.test_fraction)),
                dedup_threshold=float(dedup.get("threshold", defaults.dedup_threshold)),
                thumb_size=int(dedup.get("thumb_size", defaults.thumb_size)),
                num_folds=d.get("num_folds"),
                fold=int(d.get("fold") or 0),
                folds=split.get("folds", defaults.folds),
                by=str(split.get("by", defaults.by)),
            ),
            loader=LoaderSettings.from_dict(d),
            augment=d.get("augment"),
            subset=d.get("subset"),
            cache_dir=d.get("cache_dir", CACHE_DIR),
        )

    # -- building ------------------------------------------------------------------------
    def resolve_root(self) -> Path:
        """The data folder (the phantom is generated into the cache on first use; a
        manifest's folder is its CSV's)."""
        return self.kind.find_root(self.data, Path(self.cache_dir or CACHE_DIR))

    def split_path(self, root: Path) -> Path:
        """The split file: ``data.split_file``, else ``split.json`` in the data folder."""
        file = self.split_settings.file
        return Path(file).expanduser() if file else root / "split.json"

    def build_index(self, strict: bool = True) -> DatasetIndex:
        """The cases of the data set; file problems raise (``strict``) or are kept (audit)."""
        return self.kind.index(self.data, self.resolve_root(), strict)

    def prepare_data(self) -> None:
        # Lightning calls this on one process only: generate the phantom there.
        if self.kind.generated:
            self.resolve_root()

    def load(self) -> None:
        """Index the data set and load every image (from the cache when possible), without
        splitting it: what evaluating all of a data set (``split=all``) needs.

        Problems of the index (missing files, labels, groups) and of the files (unreadable,
        a mask of another size) are reported together in one error.
        """
        if self.index is not None:
            return
        index = self.build_index(strict=False)
        self.classes = index.classes  # without the empty ones under data.drop_empty_classes
        if index.ignored_files:
            log.warning(
                "%s: %d file(s) or folder(s) not used: %s (medmtl-data audit lists them all)",
                index.root,
                len(index.ignored_files),
                summarize([f"{p}: {why}" for p, why in index.ignored_files], 5),
            )
        items, unusable = load_cases(
            index.cases,
            self.preprocess,
            self.cache_dir,
            self.loader.load_workers,
            thumb_size=self.split_settings.thumb_size,
        )
        problems = index.problems + unusable
        if problems:
            raise DataError(
                f"{len(problems)} problem(s) with the data of {self.name} ({index.root}): "
                f"{summarize(problems, 5)}. Nothing was done; `medmtl-data audit` lists them all."
            )
        if not index.cases:
            raise DataError(f"{self.name} ({index.root}): no images found.")
        self.items = [it for it in items if it is not None]
        self.index = index
        self.own_classes = tuple(index.classes)
        self.split = ["all"] * len(index.cases)
        self.groups = list(range(len(index.cases)))

    def setup(self, stage: str | None = None) -> None:
        if self._split_done:
            return
        self.load()
        cases = self.index.cases
        self.split, self.groups = self._load_or_write_split(self.index.root, cases)
        self._split_done = True
        s = self.split_settings
        if s.folds:  # cross-validation: the file holds each case's fold
            self.split = cv_split(
                self.split,
                [c.label for c in cases],
                s.units(self.groups),
                int(s.fold),
                s.val_fraction,
                s.seed,
            )
        elif s.num_folds:
            self.split = kfold_train_val(
                self.split,
                [c.label for c in cases],
                self.groups,
                int(s.num_folds),
                int(s.fold),
                s.seed,
            )
        if self.subset:
            self._take_subset(int(self.subset))
        counts = {s: self.split.count(s) for s in SPLITS}
        log.info(
            "%s: %d images (%s)",
            self.name,
            len(cases),
            ", ".join(f"{k} {v}" for k, v in counts.items()),
        )
        # an evaluation needs only the split it tests (_check_split); training needs them all,
        # but the test side of a data set split without one (data.split.test_fraction=0)
        wanted = [k for k in SPLITS if k != "test" or s.test_fraction > 0]
        empty = [k for k in wanted if counts[k] == 0] if stage != "test" else []
        if empty:
            raise DataError(
                f"{self.name}: split(s) {', '.join(empty)} have no images; use more data."
            )

    def split_files(self) -> dict[str, Path]:
        """The split file this data module read or wrote in ``setup`` (by data set name; empty
        before setup and for ``split=all``): what a run records of its data split."""
        return {self.name: self._split_file} if self._split_file is not None else {}

    def _load_or_write_split(self, root: Path, cases: list[Case]) -> tuple[list[str], list[int]]:
        path = self.split_path(root)
        self._split_file = path
        ids = [c.case_id for c in cases]
        s = self.split_settings
        if path.exists():
            split, groups, _ = read_split_file(path, ids, s.folds)
            return split, groups
        found = find_groups([it.thumb for it in self.items], s.dedup_threshold)
        # near duplicates and the data set's own groups (patients) stay together
        groups = combine_groups(found, [c.group for c in cases])
        labels = [c.label for c in cases]
        settings = s.document(self.name)
        if any(c.group for c in cases):
            settings["groups"] = "near duplicates and the data set's groups (patients)"
        given = [c.split for c in cases]
        mixed = train_val_mixed([str(g) for g in given], cases) if all(given) else []
        if s.folds and s.by == "image" and any(c.group for c in cases):
            raise DataError(
                f"{self.name}: data.split.by=image would put images of one patient on both "
                "sides of the folds (the data set names patients); set data.split.by=group."
            )
        if s.folds and any(given):
            raise DataError(
                f"{self.name}: data.split.folds={s.folds} draws cross-validation folds, but the "
                "data set gives its own split; set data.split.folds=null."
            )
        if s.folds:  # a protocol's cross-validation; the file records medmtl's groups
            split = make_cv_folds(labels, s.units(groups), int(s.folds), s.seed)
            if s.by == "image":
                settings["groups"] = "near duplicates (recorded; the folds split by image)"
        elif mixed:  # image-level validation marks (BUS-BRA's valid_<k>): redrawn by patient
            split = repair_given_split([str(g) for g in given], labels, groups, s.seed)
            split = check_given_split(split, groups, cases, path)
            settings["split"] = (
                f"test given by the data set; its validation marks put {len(mixed)} "
                "patient(s) on both the training and the validation side, so medmtl drew the "
                "validation images from the other images, patients kept together"
            )
            log.warning("%s: %s.", self.name, settings["split"])
        elif all(given):
            split = check_given_split([str(g) for g in given], groups, cases, path)
            settings["split"] = "given by the data set"
        elif any(given):  # a published test fold: train and val are made from the rest
            split = complete_split(labels, groups, given, s.val_fraction, s.seed)
            split = check_given_split(split, groups, cases, path)
            settings["split"] = "test given by the data set, validation made by medmtl"
        else:
            split = make_split(labels, groups, s.val_fraction, s.test_fraction, s.seed)
        write_split_file(
            path,
            ids,
            labels,
            self.classes,
            split,
            groups,
            settings,
            found.pairs,
            s.parts(),
        )
        log.warning("Wrote the split file %s; %s", path, split_file_advice(path))
        read_split_file(path, ids, s.folds)  # the file just written must read back
        return split, groups

    def _take_subset(self, n: int) -> None:
        """Keep about ``n`` images per split (stratified by class) for quick experiments."""
        rng = np.random.default_rng(self.split_settings.seed)
        keep: list[int] = []
        for s in SPLITS:
            for label in range(len(self.classes)):
                idx = [
                    i
                    for i, (sp, c) in enumerate(zip(self.split, self.index.cases, strict=True))
                    if sp == s and c.label == label
                ]
                k = max(1, round(n * len(idx) / max(1, self.split.count(s)))) if idx else 0
                keep += rng.choice(idx, size=min(k, len(idx)), replace=False).tolist()
        keep.sort()
        self.index.cases = [self.index.cases[i] for i in keep]
        self.items = [self.items[i] for i in keep]
        self.split = [self.split[i] for i in keep]
        self.groups = [self.groups[i] for i in keep]

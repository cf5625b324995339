"""The LightningDataModule: index -> cached arrays -> leakage-safe split -> augmented batches."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler, get_worker_info

from medmtl.data.cache import CachedCase, load_all
from medmtl.data.duplicates import find_groups
from medmtl.data.index import Case, DatasetIndex, index_class_folders
from medmtl.data.phantom import PHANTOM_CLASSES, ensure_phantom
from medmtl.data.splits import (
    SPLITS,
    kfold_train_val,
    make_split,
    read_split_file,
    write_split_file,
)
from medmtl.data.transforms import eval_transform, train_transform
from medmtl.errors import ConfigError, DataError
from medmtl.preprocess.pipeline import Conversion, PreprocessSettings

log = logging.getLogger(__name__)
SOURCES = ("folder", "phantom")


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
        out = self.transform(image=item.image[..., None], mask=item.mask.astype(np.uint8))
        return {
            "image": out["image"].float(),
            "mask": torch.as_tensor(out["mask"], dtype=torch.float32).unsqueeze(0),
            "label": torch.tensor(self.labels[i], dtype=torch.long),
            "index": i,
        }


def check_image_size(image_size: object) -> None:
    """The network input side: a positive multiple of 32 (the encoders downsample by 32)."""
    try:
        size = int(image_size)  # type: ignore[arg-type]
        ok = size == float(image_size) and size >= 32 and size % 32 == 0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        size, ok = 0, False
    if not ok:
        raise ConfigError(
            f"data.image_size={image_size}: must be a positive multiple of 32 (encoders "
            f"downsample by 32); try {max(32, round(size / 32) * 32)}."
        )


class MedDataModule(L.LightningDataModule):
    """Class-folder data sets (``data=busi``, ``data=folder``) and the phantom (``data=phantom``)."""

    def __init__(
        self,
        name: str = "busi",
        source: str = "folder",
        root: str | None = None,
        classes: Sequence[str] = ("normal", "benign", "malignant"),
        mask_optional_classes: Sequence[str] = (),
        split_file: str | None = None,
        image_size: int = 160,
        conversion: dict | None = None,
        clahe: bool = False,
        clahe_clip_limit: float = 2.0,
        clahe_tile_grid: int = 8,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = ".cache",
        dedup: dict | None = None,
        split: dict | None = None,
        num_folds: int | None = None,
        fold: int = 0,
        augment: dict | None = None,
        phantom: dict | None = None,
        subset: int | None = None,
        load_workers: int = 2,
        balanced_sampling: bool = False,
        drop_empty_classes: bool = False,
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ConfigError(
                f"data.source={source!r} is unknown; choose one of {', '.join(SOURCES)}."
            )
        check_image_size(image_size)
        if source == "folder" and not root:
            raise ConfigError(f"data.root is not set for data={name}; point it at the data folder.")
        self.name = name
        self.source = source
        self.root = root
        self.classes = tuple(PHANTOM_CLASSES if source == "phantom" else classes)
        self.mask_optional_classes = tuple(mask_optional_classes)
        self.split_file = split_file
        self.settings = PreprocessSettings(
            image_size=image_size,
            conversion=Conversion(**(conversion or {})),
            clahe=clahe,
            clahe_clip_limit=clahe_clip_limit,
            clahe_tile_grid=clahe_tile_grid,
            thumb_size=int((dedup or {}).get("thumb_size", 32)),
        )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self.dedup_threshold = float((dedup or {}).get("threshold", 0.95))
        self.split_cfg = {"seed": 42, "val_fraction": 0.1, "test_fraction": 0.2, **(split or {})}
        self.num_folds = num_folds
        self.fold = fold
        self.augment = dict(augment or {})
        self.phantom = dict(phantom or {})
        self.subset = subset
        self.load_workers = load_workers
        self.balanced_sampling = balanced_sampling
        self.drop_empty_classes = drop_empty_classes
        self.index: DatasetIndex | None = None
        self.items: list[CachedCase] = []
        self.split: list[str] = []
        self.groups: list[int] = []

    # -- building ------------------------------------------------------------------------
    def resolve_root(self) -> Path:
        if self.source == "phantom":
            return ensure_phantom(
                Path(self.cache_dir or ".cache"),
                seed=int(self.phantom.get("seed", 0)),
                counts=self.phantom.get("counts"),
                size=int(self.phantom.get("size", 256)),
            )
        return Path(str(self.root)).expanduser()

    def split_path(self, root: Path) -> Path:
        return Path(self.split_file) if self.split_file else root / "split.json"

    def build_index(self, strict: bool = True) -> DatasetIndex:
        root = self.resolve_root()
        hint = (
            "data.root (or the BUSI_ROOT environment variable)"
            if self.name == "busi"
            else "data.root"
        )
        return index_class_folders(
            root, self.classes, self.mask_optional_classes, hint, strict, self.drop_empty_classes
        )

    def prepare_data(self) -> None:
        # Lightning calls this on one process only: generate the phantom there.
        if self.source == "phantom":
            self.resolve_root()

    def setup(self, stage: str | None = None) -> None:
        if self.index is not None:
            return
        index = self.build_index()
        self.classes = index.classes  # without the empty ones under data.drop_empty_classes
        if index.ignored_files:
            log.warning(
                "%s: %d file(s) or folder(s) not used: %s%s (medmtl-data audit lists them all)",
                index.root,
                len(index.ignored_files),
                "; ".join(f"{p}: {why}" for p, why in index.ignored_files[:5]),
                " ..." if len(index.ignored_files) > 5 else "",
            )
        cases = index.cases
        self.items = load_all(cases, self.settings, self.cache_dir, self.load_workers)
        self.index = index
        self.split, self.groups = self._load_or_write_split(index.root, cases)
        if self.num_folds:
            self.split = kfold_train_val(
                self.split,
                [c.label for c in cases],
                self.groups,
                int(self.num_folds),
                int(self.fold),
                int(self.split_cfg["seed"]),
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
        empty = [s for s in SPLITS if counts[s] == 0]
        if empty:
            raise DataError(
                f"{self.name}: split(s) {', '.join(empty)} have no images; use more data."
            )

    def _load_or_write_split(self, root: Path, cases: list[Case]) -> tuple[list[str], list[int]]:
        path = self.split_path(root)
        ids = [c.case_id for c in cases]
        if path.exists():
            split, groups, _ = read_split_file(path, ids)
            return split, groups
        found = find_groups([it.thumb for it in self.items], self.dedup_threshold)
        labels = [c.label for c in cases]
        split = make_split(
            labels,
            found.group_of,
            float(self.split_cfg["val_fraction"]),
            float(self.split_cfg["test_fraction"]),
            int(self.split_cfg["seed"]),
        )
        settings = {
            "dataset": self.name,
            "dedup_threshold": self.dedup_threshold,
            "thumb_size": self.settings.thumb_size,
            **self.split_cfg,
        }
        write_split_file(
            path, ids, labels, self.classes, split, found.group_of, settings, found.pairs
        )
        log.warning("Wrote the split file %s; commit it so every run uses the same cases.", path)
        read_split_file(path, ids)  # the file just written must read back
        return split, found.group_of

    def _take_subset(self, n: int) -> None:
        """Keep about ``n`` images per split (stratified by class) for quick experiments."""
        rng = np.random.default_rng(int(self.split_cfg["seed"]))
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

    # -- access -----------------------------------------------------------------------------
    def cases(self, split: str) -> list[Case]:
        """The cases of one split, in index order."""
        self._check_split(split)
        return [c for c, s in zip(self.index.cases, self.split, strict=True) if s == split]

    def dataset(self, split: str, train: bool = False) -> ArrayDataset:
        self._check_split(split)
        idx = [i for i, s in enumerate(self.split) if s == split]
        tf = (
            train_transform(self.settings.image_size, **self.augment) if train else eval_transform()
        )
        return ArrayDataset(
            [self.items[i] for i in idx], [self.index.cases[i].label for i in idx], tf
        )

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split={split!r} is unknown; choose one of {', '.join(SPLITS)}.")
        if self.index is None:
            self.setup()

    def dataloader(self, split: str, train: bool = False) -> DataLoader:
        ds = self.dataset(split, train)
        sampler = None
        if train and self.balanced_sampling:
            # every class drawn equally often on average (with replacement), one epoch = len(ds)
            counts = np.bincount(ds.labels, minlength=len(self.classes))
            weights = [1.0 / counts[c] for c in ds.labels]
            sampler = WeightedRandomSampler(weights, num_samples=len(ds), replacement=True)
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            # PAN and DeepLab BatchNorm fail on a training batch of one image
            drop_last=train and len(ds) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")

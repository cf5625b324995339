"""Several data sets as one (``data=multi``), and leaving one of them out (``experiment=lodo``).

Each data set keeps its own split (its split file, folds and patient groups); its images are
labelled with the combined class list, which must name each data set's classes. One
preprocessing (the top-level ``data.image_size``, conversion, CLAHE) serves all of them, as
one network sees them. With ``data.leave_out=<name>`` that data set is not trained or
validated on: its every image is the test split, and the other data sets' test images are
not used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medmtl.data.datamodule import (
    DATA_KEYS,
    PREPROCESS_KEYS,
    CasesDataModule,
    LoaderSettings,
    MedDataModule,
)
from medmtl.data.index import DatasetIndex
from medmtl.data.splits import SPLITS
from medmtl.errors import ConfigError, DataError
from medmtl.preprocess.pipeline import PreprocessSettings
from medmtl.settings.data import CACHE_DIR, DATA, check_image_size
from medmtl.settings.data import keys as data_keys

log = logging.getLogger(__name__)
UNUSED = "unused"  # the other data sets' test images in a leave-one-out run
# a combined data set's own keys: the data keys, less those that name one data set's files,
# plus the data sets and the one left out
_KEYS = (DATA_KEYS - {"manifest", "columns", "busbra"}) | set(data_keys("multi"))


class MultiDataModule(CasesDataModule):
    """The data sets of ``data.sets`` as one data module: it holds one
    :class:`~medmtl.data.datamodule.MedDataModule` per data set, splits each on its own and
    serves their cases together."""

    def __init__(
        self,
        name: str,
        classes: tuple[str, ...],
        sets: dict[str, MedDataModule],
        leave_out: str | None = None,
        preprocess: PreprocessSettings | None = None,
        loader: LoaderSettings | None = None,
        augment: dict | None = None,
        cache_dir: str | None = CACHE_DIR,
        set_sampling: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(name, classes, preprocess, loader, augment, cache_dir)
        if not sets:
            raise ConfigError("data.sets is empty; data=multi combines two or more data sets.")
        if leave_out is not None and leave_out not in sets:
            raise ConfigError(
                f"data.leave_out={leave_out}: not one of the data sets {', '.join(sets)}."
            )
        if leave_out is not None and len(sets) < 2:
            raise ConfigError("data.leave_out needs two or more data sets in data.sets.")
        self.sets = sets
        self.leave_out = leave_out
        self.set_sampling = check_set_sampling(set_sampling, sets, leave_out)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> MultiDataModule:
        d = dict(cfg)
        unknown = sorted(set(d) - _KEYS)
        if unknown:
            raise ConfigError(f"data.{unknown[0]}: not a setting of data=multi.")
        if d.get("num_folds"):
            raise ConfigError(
                "data.num_folds: data=multi keeps each data set's own split; set the folds "
                "per data set (data.sets.<name>.num_folds and .fold)."
            )
        if d.get("fold"):  # it would be ignored: the folds belong to the data sets
            raise ConfigError(
                f"data.fold={d['fold']}: data=multi has no folds of its own; set the fold of a "
                "data set (data.sets.<name>.num_folds and data.sets.<name>.fold)."
            )
        classes = tuple(d.get("classes") or ())
        preprocess = {k: d[k] for k in PREPROCESS_KEYS if k in d}
        check_image_size(preprocess.get("image_size", DATA.image_size))
        sets = {}
        for name, sub in dict(d.get("sets") or {}).items():
            sub = {**dict(sub), **preprocess, "cache_dir": d.get("cache_dir", CACHE_DIR)}
            sub.setdefault("name", name)
            if sub.get("source") == "multi":
                raise ConfigError(f"data.sets.{name}: a combined data set cannot hold another.")
            own = tuple(sub.get("classes") or ())
            foreign = [c for c in own if c not in classes]
            if foreign:
                raise ConfigError(
                    f"data.sets.{name}: class(es) {', '.join(foreign)} are not in data.classes "
                    f"({', '.join(classes)}); name them alike, or map the labels with "
                    f"data.sets.{name}.class_map."
                )
            sets[name] = MedDataModule.from_config(sub)
        return cls(
            name=str(d.get("name") or d["source"]),  # data=multi names itself by its source
            classes=classes,
            sets=sets,
            leave_out=d.get("leave_out"),
            set_sampling=d.get("set_sampling"),
            preprocess=PreprocessSettings.from_dict(d),
            loader=LoaderSettings.from_dict(d),
            augment=d.get("augment"),
            cache_dir=d.get("cache_dir", CACHE_DIR),
        )

    def draw_weights(self, labels: Sequence[int], split: str) -> np.ndarray | None:
        """The class draws (:meth:`CasesDataModule.draw_weights`) rescaled so that each data
        set of ``data.set_sampling`` gets its share of the draws, the others the rest in
        proportion to their sizes."""
        weights = super().draw_weights(labels, split)
        if not self.set_sampling:
            return weights
        names = np.array([c.dataset for c in self.cases(split)])
        weights = np.full(len(names), 1 / len(names)) if weights is None else weights.copy()
        rest = [n for n in self.sets if n not in self.set_sampling]
        rest_total = sum(weights[names == n].sum() for n in rest)
        left = 1 - sum(self.set_sampling.values())
        for name in self.sets:
            here = names == name
            if not here.any():
                continue
            share = self.set_sampling.get(name)
            if share is None:
                share = left * weights[here].sum() / rest_total
            weights[here] *= share / weights[here].sum()
        return weights / weights.sum()

    def prepare_data(self) -> None:
        for dm in self.sets.values():
            dm.prepare_data()

    def _combine(self, splits: dict[str, list[str]]) -> None:
        cases, items, split, groups = [], [], [], []
        offset = 0
        for name, dm in self.sets.items():
            dm.relabel(self.classes, {c: c for c in dm.classes})
            cases += [replace(c, dataset=name) for c in dm.index.cases]
            items += dm.items
            split += splits[name]
            groups += [g + offset for g in dm.groups]
            offset += max(dm.groups, default=-1) + 1
        self.index = DatasetIndex(root=Path("."), classes=self.classes, cases=cases)
        self.own_classes = self.classes
        self.items, self.split, self.groups = items, split, groups

    def load(self) -> None:
        """Every image of every data set (``split=all``), unsplit."""
        if self.index is not None:
            return
        for dm in self.sets.values():
            dm.load()
        self._combine({n: ["all"] * len(dm.index.cases) for n, dm in self.sets.items()})

    def setup(self, stage: str | None = None) -> None:
        if self._split_done:
            return
        splits = {}
        for name, dm in self.sets.items():
            if name == self.leave_out:
                dm.load()  # tested on every image, never split
                splits[name] = ["test"] * len(dm.index.cases)
            else:
                dm.setup(stage)
                splits[name] = [UNUSED if s == "test" and self.leave_out else s for s in dm.split]
        self._combine(splits)
        self._split_done = True
        counts = {s: self.split.count(s) for s in SPLITS}
        log.info(
            "%s: %s (%s)%s",
            self.name,
            ", ".join(f"{n} {len(dm.index.cases)}" for n, dm in self.sets.items()),
            ", ".join(f"{k} {v}" for k, v in counts.items()),
            f"; left out: {self.leave_out}" if self.leave_out else "",
        )
        empty = [s for s in SPLITS if counts[s] == 0]
        if empty:
            raise DataError(f"{self.name}: split(s) {', '.join(empty)} have no images.")

    def split_files(self) -> dict[str, Path]:
        """Each data set's split file, by data set name."""
        return {k: v for dm in self.sets.values() for k, v in dm.split_files().items()}

    def split_classes(self, split: str) -> list[str]:
        """The classes the data sets in ``split`` define (a left-out data set may have fewer)."""
        names = (
            [self.leave_out]
            if split == "test" and self.leave_out
            else [n for n in self.sets if n != self.leave_out or split == "all"]
        )
        own = {c for n in names for c in self.sets[n].own_classes}
        return [c for c in self.classes if c in own]


def check_set_sampling(
    shares: Mapping[str, Any] | None, sets: Mapping[str, Any], leave_out: str | None
) -> dict[str, float] | None:
    """``data.set_sampling`` checked: data sets that are trained on, shares in (0, 1) that
    leave some for the sets not named (all named: they sum to 1)."""
    if not shares:
        return None
    out = {}
    for name, share in dict(shares).items():
        if name not in sets or name == leave_out:
            raise ConfigError(
                f"data.set_sampling.{name}: not a data set trained on "
                f"({', '.join(n for n in sets if n != leave_out)})."
            )
        try:
            out[name] = float(share)
        except (TypeError, ValueError):
            out[name] = float("nan")
        if not 0 < out[name] < 1:
            raise ConfigError(f"data.set_sampling.{name}={share}: a share between 0 and 1.")
    total = sum(out.values())
    trained = [n for n in sets if n != leave_out]
    if total > 1 + 1e-9 or (total < 1 - 1e-9 and set(out) == set(trained)):
        raise ConfigError(
            f"data.set_sampling: shares summing to {total:g}; they must sum to 1 when every "
            "data set is named, and to less than 1 when some are not."
        )
    if total >= 1 - 1e-9 and set(out) != set(trained):
        raise ConfigError(
            f"data.set_sampling: shares summing to {total:g} leave nothing for "
            f"{', '.join(n for n in trained if n not in out)}."
        )
    return out

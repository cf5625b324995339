"""The data module a data config describes: one data set, or several (``data=multi``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medmtl.data.datamodule import CasesDataModule, MedDataModule
from medmtl.data.multi import MultiDataModule
from medmtl.data.sources import COMBINED
from medmtl.settings.data import check_data


def datamodule_from_config(cfg: Mapping[str, Any] | DictConfig) -> CasesDataModule:
    """``conf/data/<name>.yaml`` (or a checkpoint's copy of it) as a data module; every value
    is checked first (:func:`~medmtl.settings.data.check_data`)."""
    d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    check_data(d)
    if d.get("source") == COMBINED:
        return MultiDataModule.from_config(d)
    return MedDataModule.from_config(d)

"""medmtl-data as jobs: audit a data set, write (or rewrite) its split file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig

from medmtl.data.audit import AuditReport, audit, format_report
from medmtl.data.build import datamodule_from_config
from medmtl.data.datamodule import MedDataModule
from medmtl.data.splits import SPLITS
from medmtl.errors import ConfigError


def one_data_set(data_cfg: DictConfig) -> MedDataModule:
    """The data module of ``data_cfg``, every setting checked (no file is read yet); medmtl-data
    works on one data set at a time."""
    dm = datamodule_from_config(data_cfg)
    if not isinstance(dm, MedDataModule):
        raise ConfigError(
            "data=multi: audit and split each data set on its own (medmtl-data audit data=<name>)."
        )
    return dm


def audit_data(data_cfg: DictConfig) -> AuditReport:
    """Decode every file of the data set and print the report; nothing is raised for a bad file."""
    dm = one_data_set(data_cfg)
    index = dm.build_index(strict=False)
    source = dm.data
    whole = (  # an image list: its relation to the groups of the data set it was made from
        dm.kind.index(replace(source, image_list=None), index.root, False)
        if source.image_list
        else None
    )
    name = Path(str(source.image_list)).name if source.image_list else ""
    report = audit(index, dm.split_path(index.root), dm.split_settings, whole=whole, list_name=name)
    print(format_report(report))
    return report


def write_split(data_cfg: DictConfig, force: bool = False) -> Path:
    """Write the data set's split file if it is missing (``force``: rewrite it)."""
    dm = one_data_set(data_cfg)
    path = dm.split_path(dm.resolve_root())
    if path.exists() and force:
        path.unlink()
    dm.setup()
    print(f"split file: {path}")
    for s in SPLITS:
        print(f"  {s}: {dm.split.count(s)} images")
    if dm.split_settings.folds:
        print(f"  (fold {dm.split_settings.fold} of {dm.split_settings.folds}: its test side)")
    return path

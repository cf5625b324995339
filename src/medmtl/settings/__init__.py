"""Typed settings: the schema of each config group (one place for each default, type and range).

The dataclasses' defaults are registered with Hydra's ConfigStore as ``<group>/schema``; a
group's YAML files start from it (``defaults: [schema, _self_]``) and keep only what differs,
and Hydra's struct mode refuses a key the schema does not have. Types and ranges are checked by
the dataclass itself (``from_dict``), before any data is read, in medmtl's one-line form
(``medmtl: error: loss.seg_weight=abc: …``, exit 2) rather than as a composition traceback.
Checkpoints store the plain dict (``to_dict``), still loadable with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medmtl.settings.checks import choice, known_keys, number
from medmtl.settings.commands import PreprocessToolSettings
from medmtl.settings.data import DATA, DataSettings, schema_defaults
from medmtl.settings.evaluation import EvalSettings
from medmtl.settings.loss import LossSettings
from medmtl.settings.model import ModelSettings
from medmtl.settings.model import schema_defaults as model_defaults
from medmtl.settings.optimizer import OptimizerSettings
from medmtl.settings.optimizer import schema_defaults as optimizer_defaults
from medmtl.settings.train import TrainSettings

# group -> the defaults its YAML files start from
SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "loss": lambda: LossSettings().to_dict(),
    "data": schema_defaults,
    "model": model_defaults,
    "optimizer": optimizer_defaults,
}
# primary config -> the defaults it starts from (stored as ``<name>_schema``)
PRIMARY_SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "train": lambda: TrainSettings().to_dict(),
    "eval": lambda: EvalSettings().to_dict(),
    "preprocess": lambda: PreprocessToolSettings().to_dict(),
}

__all__ = [
    "DATA",
    "SCHEMAS",
    "DataSettings",
    "EvalSettings",
    "LossSettings",
    "ModelSettings",
    "OptimizerSettings",
    "TrainSettings",
    "choice",
    "known_keys",
    "number",
    "register",
]


def register() -> None:
    """Store every schema's defaults as ``<group>/schema`` in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, defaults in SCHEMAS.items():
        store.store(group=group, name="schema", node=defaults())
    for name, defaults in PRIMARY_SCHEMAS.items():
        store.store(name=f"{name}_schema", node=defaults())

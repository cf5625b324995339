"""The ``optimizer`` settings: what every optimizer file shares, with its defaults and checks.

An optimizer is any torch optimizer class named by ``_target_`` (``conf/optimizer/*.yaml``);
its own further arguments (``momentum``, ``betas``...) pass through to it unchecked here, and
building it before any data is read refuses a wrong one (``check_optimization``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from medmtl.errors import ConfigError
from medmtl.settings.checks import check_own_fields, ranged


@dataclass
class OptimizerSettings:
    """The keys every ``conf/optimizer`` file has (registered as ``optimizer/schema``)."""

    target: str | None = field(default=None, metadata={"key": "_target_"})  # the class
    partial: bool = field(default=True, metadata={"key": "_partial_"})  # medmtl passes params
    lr: float = ranged(1.0e-3, 0.0, what="a learning rate above 0")
    weight_decay: float = ranged(0.0, 0.0)

    def __post_init__(self) -> None:
        check_own_fields(self, "optimizer")
        if self.lr == 0:  # the one bound that is open
            raise ConfigError(f"optimizer.lr={self.lr}: a learning rate above 0.")

    @classmethod
    def check(cls, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` (a composed ``optimizer``) with the shared keys checked; the class's own
        arguments are kept as they are."""
        keys = {f.metadata.get("key", f.name): f.name for f in fields(cls)}
        cls(**{keys[k]: v for k, v in values.items() if k in keys})
        return values


def schema_defaults() -> dict[str, Any]:
    """The ``optimizer/schema`` node (``_target_`` is each file's own)."""
    d = OptimizerSettings()
    return {
        f.metadata.get("key", f.name): getattr(d, f.name)
        for f in fields(OptimizerSettings)
        if f.name != "target"
    }

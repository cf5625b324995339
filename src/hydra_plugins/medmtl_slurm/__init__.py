"""medmtl's SLURM launcher for Hydra (``hydra/launcher=slurm|slurm_cpu|slurm_gpu``).

Registers the launcher's settings: hydra-submitit-launcher's, plus ``srun_args``.
"""

from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class MedmtlSlurmConf(SlurmQueueConf):
    """hydra-submitit-launcher's SLURM settings, launched by medmtl's launcher."""

    _target_: str = "hydra_plugins.medmtl_slurm.launcher.MedmtlSlurmLauncher"
    # extra arguments of the srun that starts each task, e.g. ["--cpu-bind=none"]
    srun_args: Optional[list[str]] = None  # noqa: UP045 (OmegaConf reads typing.Optional)


ConfigStore.instance().store(
    group="hydra/launcher", name="medmtl_slurm", node=MedmtlSlurmConf, provider="medmtl"
)

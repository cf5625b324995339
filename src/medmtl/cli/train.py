"""medmtl-train: compose conf/train.yaml, train, test the best checkpoint.

In a multirun (``-m``) a failing job writes ``failed.json`` in its folder and the sweep goes
on; ``medmtl-tables`` shows that cell as failed.
"""

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from medmtl.cli import fail
from medmtl.cli.options import hydra_main
from medmtl.config import CONFIG_DIR
from medmtl.errors import MedmtlError, disk_error
from medmtl.settings.train import TrainSettings

log = logging.getLogger("medmtl")


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


FAILED_JOBS: list[str] = []  # folders of the failed jobs of the sweep (FailedJobs fills it)


class FailedJobs(Callback):
    """Hydra callback (conf/hydra/default.yaml): after a sweep, collect the jobs that failed
    from their ``failed.json`` (also jobs a launcher ran in other processes)."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        for f in sorted(sweep.glob("*/failed.json")):
            if str(f.parent.resolve()) not in FAILED_JOBS:
                FAILED_JOBS.append(str(f.parent.resolve()))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    from medmtl.workflows.train import record_failure, train

    try:
        metrics = train(cfg)
    except Exception as exc:
        # a full disk under Lightning's checkpoint (a temporary file of its own): one line too
        exc = disk_error(exc, cfg.paths.output_dir) or exc
        with contextlib.suppress(OSError, MedmtlError):  # failed.json may not fit either
            record_failure(cfg.paths.output_dir, exc)
        if _is_multirun():
            log.error("job failed (%s: %s); the sweep goes on", type(exc).__name__, exc)
            return None
        if isinstance(exc, MedmtlError):
            fail(str(exc))
        raise
    return metrics.get(cfg.get("optimized_metric") or "val/overall")  # for Hydra sweepers


def _check(cfg: DictConfig) -> None:
    """Every setting, before Hydra makes the run's folder and before any data is read. A sweep
    sent to a cluster is checked here for its values only (and that the cluster is there): what
    depends on the machine (the GPU, the weights, the data folder) is checked in each job."""
    from medmtl.workflows import build, slurm

    if not slurm.sends_jobs_elsewhere(cfg):
        build.check_train_config(cfg)
        return
    build.check_train_values(cfg)
    for note in slurm.check_submission(cfg):
        print(f"medmtl: note: {note}", file=sys.stderr)


def main() -> None:
    """medmtl-train; a sweep in which a job failed exits 1 after the other jobs finished."""
    for arg in sys.argv[1:]:  # Hydra makes these folders before medmtl runs: check them first
        key, _, value = arg.partition("=")
        if key.lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir") and Path(value).is_file():
            fail(f"{key}={value} is an existing file; give a folder.")
    hydra_main("medmtl-train", __doc__, "train", _main, settings=TrainSettings, check=_check)
    # Hydra imports the callback as medmtl.cli.train, also when this file runs as __main__
    from medmtl.cli.train import FAILED_JOBS

    if FAILED_JOBS:
        fail(
            f"{len(FAILED_JOBS)} sweep job(s) failed: "
            + ", ".join(FAILED_JOBS)
            + " (each folder's failed.json has the reason; medmtl-tables lists them).",
            status=1,
        )


if __name__ == "__main__":
    main()

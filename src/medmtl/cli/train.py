"""medmtl-train: compose conf/train.yaml, train, test the best checkpoint.

In a multirun (``-m``) a failing job writes ``failed.json`` in its folder and the sweep goes
on; ``medmtl-tables`` shows that cell as failed.
"""

import logging
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from medmtl.config import CONFIG_DIR
from medmtl.errors import MedmtlError

log = logging.getLogger("medmtl")


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from medmtl.reporting.summary import write_json
    from medmtl.training.pipeline import train

    try:
        metrics = train(cfg)
    except Exception as exc:
        out = Path(cfg.paths.output_dir)
        write_json(
            out / "failed.json",
            {"error": str(exc), "type": type(exc).__name__, "traceback": traceback.format_exc()},
        )
        if _is_multirun():
            log.error("job failed (%s: %s); the sweep goes on", type(exc).__name__, exc)
            return None
        if isinstance(exc, MedmtlError):
            print(f"medmtl: error: {exc}", file=sys.stderr)
            sys.exit(2)
        raise
    return metrics.get(cfg.get("optimized_metric") or "val/overall")  # for Hydra sweepers


if __name__ == "__main__":
    main()

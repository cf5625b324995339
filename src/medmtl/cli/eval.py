"""medmtl-eval: re-evaluate a checkpoint on a split (ckpt_path=... split=test|val|train)."""

import hydra
from omegaconf import DictConfig

from medmtl.cli import run_or_exit
from medmtl.config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    from medmtl.workflows.evaluate import evaluate

    run_or_exit(evaluate, cfg)


if __name__ == "__main__":
    main()

"""medmtl-train: compose conf/train.yaml, train, test the best checkpoint."""

import hydra
from omegaconf import DictConfig

from medmtl.cli import run_or_exit
from medmtl.config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from medmtl.training.pipeline import train

    metrics = run_or_exit(train, cfg)
    return metrics.get("val/overall")  # what a Hydra sweeper optimises


if __name__ == "__main__":
    main()

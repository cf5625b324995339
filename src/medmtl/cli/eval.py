"""medmtl-eval: evaluate a trained model on a split of its data, or on another data set.

medmtl-eval ckpt_path=<checkpoint | run | ensemble | sweep folder> [split=test|val|train|all]
            [data=<another data set> ...] [key=value ...]
"""

import hydra
from omegaconf import DictConfig

from medmtl.cli import run_or_exit
from medmtl.cli.options import hydra_main
from medmtl.config import CONFIG_DIR
from medmtl.settings.evaluation import EvalSettings


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def _main(cfg: DictConfig) -> None:
    from medmtl.workflows.evaluate import evaluate

    run_or_exit(evaluate, cfg)


def _check(cfg: DictConfig) -> None:
    """The settings and the model's path, before Hydra makes the run folder."""
    from medmtl.workflows.members import check_model_path

    EvalSettings.from_dict(cfg)
    check_model_path(cfg.ckpt_path)


def main() -> None:
    hydra_main("medmtl-eval", __doc__, "eval", _main, EvalSettings, check=_check)


if __name__ == "__main__":
    main()

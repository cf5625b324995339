"""Where the configs are (``conf/`` of the checkout), the ``medmtl_root`` and ``medmtl_fold_tag``
resolvers, the groups' typed schemas (:mod:`medmtl.settings`), and composing a config outside a
Hydra run."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from medmtl.settings import register as register_schemas


def project_root() -> Path:
    """The repository: the checkout this package lives in (else the current folder).

    It holds the configs and the committed split files; where medmtl writes is the separate
    setting ``paths.output_root`` (``MEDMTL_OUTPUT``).
    """
    here = Path(__file__).resolve().parents[2]
    if (here / "conf" / "train.yaml").exists():
        return here
    return Path.cwd()


CONFIG_DIR = str(project_root() / "conf")


def fold_tag(test: object, val: object = None) -> str:
    """``test1``, ``test2-3-4-5_val1``: the published folds used, in a split file's name."""
    tests = list(test) if isinstance(test, (list, tuple, ListConfig)) else [test]
    tag = "test" + "-".join(str(t) for t in tests)
    return tag if val is None else f"{tag}_val{val}"


def job_workers() -> int:
    """Data-loader workers for this process: the CPUs its job was given (SLURM's
    ``SLURM_CPUS_PER_TASK``, else the CPUs this process may run on), less one for training."""
    import os

    given = os.environ.get("SLURM_CPUS_PER_TASK", "")
    cpus = int(given) if given.isdigit() else len(os.sched_getaffinity(0))
    return max(0, cpus - 1)


if not OmegaConf.has_resolver("medmtl_workers"):
    # resolved where the run starts: a SLURM job counts its own CPUs, not the login node's
    OmegaConf.register_new_resolver("medmtl_workers", job_workers)
if not OmegaConf.has_resolver("medmtl_root"):
    OmegaConf.register_new_resolver("medmtl_root", lambda: str(project_root()))
if not OmegaConf.has_resolver("medmtl_fold_tag"):
    OmegaConf.register_new_resolver("medmtl_fold_tag", fold_tag)
register_schemas()  # the groups' YAML files start from these (``defaults: [schema, _self_]``)


def compose(
    config_name: str = "train",
    overrides: list[str] | None = None,
    return_hydra_config: bool = False,
) -> DictConfig:
    """A config composed from ``conf/`` as the command line would, outside a Hydra run
    (benchmarks, notebooks, tests); ``paths.output_dir`` is not set."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(
            config_name=config_name,
            overrides=list(overrides or []),
            return_hydra_config=return_hydra_config,
        )

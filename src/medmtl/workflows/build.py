"""Building a training run from its config: the checks before any data is read, the network's
settings (with the profile's stand-in encoders) and the LightningModule."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medmtl.data.build import datamodule_from_config
from medmtl.data.datamodule import CasesDataModule
from medmtl.errors import ConfigError
from medmtl.models.multitask import check_model_names
from medmtl.models.registry import architecture
from medmtl.models.weights import check_downloadable, offline_weights_for
from medmtl.settings import LossSettings, number
from medmtl.settings.data import check_data
from medmtl.settings.model import ModelSettings, NetSettings
from medmtl.settings.train import TrainSettings
from medmtl.training.module import MultiTaskModule, check_optimization
from medmtl.training.precision import trainer_setting
from medmtl.training.progressive import ProgressiveResize
from medmtl.workflows.members import check_model_path

log = logging.getLogger(__name__)


def model_kwargs(
    model_cfg: DictConfig | dict, substitutes: dict | None = None, keep_weights: bool = False
) -> NetSettings:
    """The network the ``model`` group (arch/encoder subgroups) describes, its names resolved.

    ``substitutes`` (from ``profile.encoder_substitutes``) maps a study encoder to a light
    stand-in; the stand-in is built with random weights, except the EfficientNet-Lites, which get
    their offline ImageNet weights. ``keep_weights`` (the user set ``model.encoder.weights``
    explicitly) keeps the configured weights for the stand-in: an explicit setting wins.
    The study encoder is kept as ``encoder_study`` so that every run records what it stands for.
    """
    m = ModelSettings.from_dict(
        model_cfg
        if isinstance(model_cfg, dict)
        else OmegaConf.to_container(model_cfg, resolve=True)
    ).to_dict()
    arch, enc = m.pop("arch"), m.pop("encoder")
    study = enc["name"]
    encoder, weights = study, enc["weights"]
    if substitutes and encoder in substitutes:
        encoder = substitutes[encoder]
        if not keep_weights:
            weights = offline_weights_for(encoder)
    return NetSettings(
        arch=arch["name"],
        arch_kwargs=dict(arch["kwargs"] or {}),
        encoder=encoder,
        encoder_weights=weights,
        encoder_study=study,
        **m,
    )


def explicit_overrides() -> set[str]:
    """Keys the user set on the command line of this run (empty outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    return {str(o).split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}


def substitutes(cfg: DictConfig) -> dict:
    """The profile's encoder substitutions (empty without a profile)."""
    prof = cfg.get("profile") or {}
    return dict(prof.get("encoder_substitutes") or {})


def net_settings(cfg: DictConfig) -> NetSettings:
    """The network's settings: the profile's stand-in encoder, unless the user set the weights."""
    keep = "model.encoder.weights" in explicit_overrides()
    return model_kwargs(cfg.model, substitutes(cfg), keep_weights=keep)


def _number(cfg: DictConfig, key: str, kind: type, low: float, high: float | None = None) -> Any:
    return number(key, OmegaConf.select(cfg, key), kind, low, high)


@dataclass
class RunSettings:
    """A training run's settings, parsed and checked once where the command starts
    (:func:`check_train_values`) and carried from there: the run's own (seed, tta,
    calibration...), the network, the loss, the optimizer and its schedule, and the data
    config (plain values, every ``data.*`` key checked; the data module reads it)."""

    run: TrainSettings
    net: NetSettings
    loss: LossSettings
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    data: dict[str, Any]


def check_train_config(cfg: DictConfig) -> RunSettings:
    """Refuse settings that cannot work, in one line, before any data is read: the values
    (:func:`check_train_values`), then what this machine must offer (:func:`check_this_machine`).
    Returns the run's settings, checked."""
    settings = check_train_values(cfg)
    check_this_machine(cfg, settings)
    return settings


def check_train_values(cfg: DictConfig) -> RunSettings:
    """The settings by themselves, the same on every machine: types, ranges, names.

    Architecture, encoder and loss names are checked by building their descriptions only;
    the image size, batch sizes, epochs and λ by value. This is all a sweep sent to a cluster
    is checked for where it is submitted (the data folder is a string there).
    """
    data = OmegaConf.to_container(cfg.data, resolve=True)
    check_data(data)  # every data.* value
    progressive = OmegaConf.select(cfg, "data.progressive_resize")
    schedule = ProgressiveResize.from_data(
        {
            "image_size": OmegaConf.select(cfg, "data.image_size"),
            "progressive_resize": OmegaConf.to_container(progressive, resolve=True)
            if isinstance(progressive, DictConfig)
            else progressive,
        }
    )
    if schedule.active and OmegaConf.select(cfg, "trainer.max_epochs") in (None, -1):
        raise ConfigError(
            "data.progressive_resize needs trainer.max_epochs (its fraction is of the epochs)."
        )
    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    if epochs is not None and epochs != -1:
        _number(cfg, "trainer.max_epochs", int, 1)
    run = TrainSettings.from_dict(cfg)  # the run's own settings: seed, tta, calibration...
    net = net_settings(cfg)  # every model.* value
    check_model_names(net)
    arch = architecture(net.arch)
    if arch is not None and int(cfg.data.image_size) < arch.min_size:
        raise ConfigError(
            f"{arch.name} needs data.image_size >= {arch.min_size} (got {cfg.data.image_size})."
        )
    loss = LossSettings.from_dict(OmegaConf.to_container(cfg.loss, resolve=True))
    optimizer, scheduler = optimization(cfg)
    check_optimization(optimizer, scheduler)
    return RunSettings(run, net, loss, optimizer, scheduler, data)


def check_this_machine(cfg: DictConfig, settings: RunSettings) -> None:
    """What the machine that trains must offer: a usable GPU for a GPU trainer, the encoder's
    weights (downloadable or cached), a distillation teacher's file, the model a fine-tuning
    starts from, the data set's folder. A sweep sent to a cluster runs this inside each job,
    where the answer counts (a failure is the job's ``failed.json``)."""
    trainer = cfg.get("trainer")
    accelerator = str(trainer_setting(trainer, "accelerator"))
    if accelerator in ("gpu", "cuda"):
        from medmtl.training.gpu import gpu_problem

        problem = gpu_problem(trainer_setting(trainer, "devices"))
        if problem:
            raise ConfigError(f"trainer.accelerator={accelerator}: {problem}; {_gpu_advice()}.")
    check_downloadable(settings.net.encoder, settings.net.encoder_weights)
    for model in (settings.run.distill.teacher, settings.run.init_from):
        if model:
            check_model_path(model)
    # the data set's source and its folder, last: the one thing a user on another machine may
    # still have to point at (no file is read)
    datamodule_from_config(settings.data)


def _gpu_advice() -> str:
    """What to do about a missing GPU: inside a SLURM job, the job's request; else the choice
    between training here on the CPU and sending the sweep to a GPU cluster."""
    import os

    if os.environ.get("SLURM_JOB_ID"):
        job = os.environ["SLURM_JOB_ID"]
        if os.environ.get("SLURM_ARRAY_JOB_ID"):  # as squeue and failed.json name it
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
        return (
            f"SLURM job {job} ran there; ask for a GPU partition "
            "(hydra.launcher.partition=...) or leave the node out (hydra.launcher.exclude=...)"
        )
    return (
        "train here on the CPU with trainer=cpu, or send the sweep to a GPU cluster from here "
        "(-m ... hydra/launcher=slurm_gpu: the GPU is checked inside each job)"
    )


def optimization(cfg: DictConfig) -> tuple[dict, dict | None]:
    """The optimizer and schedule settings as plain values (they go into the checkpoint)."""
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    scheduler = cfg.get("scheduler")
    return optimizer, (OmegaConf.to_container(scheduler, resolve=True) if scheduler else None)


def build_module(settings: RunSettings, dm: CasesDataModule) -> MultiTaskModule:
    """The LightningModule of a run; its hyper-parameters are the settings' plain dicts (safe
    checkpoints, read back once through :func:`medmtl.models.checkpoint.stored_net`)."""
    return MultiTaskModule(
        model=settings.net.to_dict(),
        loss=settings.loss.to_dict(),
        optimizer=settings.optimizer,
        scheduler=settings.scheduler,
        class_names=list(dm.classes),
        data=settings.data,
        seed=settings.run.seed,
    )

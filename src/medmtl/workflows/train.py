"""What ``medmtl-train`` does, as a plain function of a composed config (``medmtl-eval``:
:mod:`medmtl.workflows.evaluate`).

This is where a run comes together: the config is checked, the data module, the
LightningModule, the loggers and callbacks are built from it, the best checkpoint is tested,
and the run folder gets ``metrics.json``, ``predictions_<split>.csv`` and the figures.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from medmtl.data.build import datamodule_from_config
from medmtl.data.datamodule import CasesDataModule
from medmtl.data.splits import fold_of
from medmtl.errors import ConfigError, Stopped
from medmtl.io.files import atomic_write_text, ensure_output_dir
from medmtl.models.checkpoint import load_checkpoint
from medmtl.reporting.summary import print_metrics, write_json, write_record
from medmtl.settings.train import TrainSettings
from medmtl.training.module import MultiTaskModule
from medmtl.training.precision import choose_precision, training_processes
from medmtl.workflows.build import (
    RunSettings,
    build_module,
    check_train_config,
    explicit_overrides,
)
from medmtl.workflows.calibrate import calibrate_module, fit_feature_scores, save_calibration
from medmtl.workflows.distill import attach_teacher, open_teacher
from medmtl.workflows.evaluate import score_split, write_split_outputs
from medmtl.workflows.logs import quiet_third_party
from medmtl.workflows.members import OpenedModel, check_classes, check_reads_like, open_model
from medmtl.workflows.resume import merge_csv_logs, resume_in_run_folder
from medmtl.workflows.slurm import requeued_checkpoint
from medmtl.workflows.wandb_runs import (
    N_IMAGES,
    ValidationMasks,
    check_online,
    guarded,
    is_wandb,
    log_evaluation,
    log_model_artifact,
    run_name,
    run_record,
    split_own_settings,
    sweep_group,
    wandb_mode,
)

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None, wandb: dict[str, Any] | None = None) -> list:
    """Instantiate a config group's entries; a W&B logger gets ``wandb`` (name, group, tags,
    job type) where its config leaves them unset, and never medmtl's own keys."""
    if not group:
        return []
    out = []
    for c in group.values():
        if c is None or "_target_" not in c:
            continue
        if str(c._target_).endswith("WandbLogger"):
            kwargs, _ = split_own_settings(OmegaConf.to_container(c, resolve=True))
            extra = {k: v for k, v in (wandb or {}).items() if kwargs.get(k) is None}
            out.append(hydra.utils.instantiate({**kwargs, **extra}))
        else:
            out.append(hydra.utils.instantiate(c))
    return out


def wandb_identity(settings: RunSettings, output_root: str | None = None) -> dict[str, Any]:
    """The W&B name, group, job type and tags of a training run: the name from its settings,
    the group from its sweep folder (a single run: its task)."""
    from hydra.core.hydra_config import HydraConfig

    run, kw = settings.run, settings.net
    seed = run.seed if "seed" in explicit_overrides() else None
    group = run.task_name
    if HydraConfig.initialized() and str(HydraConfig.get().mode) == "RunMode.MULTIRUN":
        group = sweep_group(HydraConfig.get().sweep.dir, output_root)
    return {
        "name": run_name(kw, settings.loss.seg_weight, fold_of(settings.data), seed),
        "group": group,
        "job_type": "train",
        "tags": run_tags(settings),
    }


def run_tags(settings: RunSettings) -> list[str]:
    """Tags that identify a run inside a sweep (architecture, backbone, λ, task, seed, fold)."""
    kw = settings.net
    tags = [str(t) for t in settings.run.tags]
    tags += [
        f"arch={kw.arch}",
        f"backbone={kw.study_encoder}",
        f"task={kw.task}",
        f"lambda={settings.loss.seg_weight}",
        f"seed={settings.run.seed}",
    ]
    if kw.encoder != kw.study_encoder:
        tags.append(f"stand-in={kw.encoder}")
    if fold_of(settings.data) is not None:
        tags.append(f"fold={fold_of(settings.data)}")
    return tags


def peak_memory_mb() -> dict[str, float]:
    """Peak resident memory so far of this process and of its finished children (MB).

    Children are the data-loader workers once they have exited; Linux reports KiB.
    """
    try:
        import resource  # Unix only
    except ImportError:
        return {}
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20  # macOS reports bytes
    return {
        "peak_rss_mb": round(own * scale, 1),
        "peak_rss_children_mb": round(children * scale, 1),
    }


def record_failure(out_dir: str | Path, exc: BaseException) -> Path:
    """``failed.json`` in the run folder: what stopped the run (tables list it as failed)."""
    import traceback

    path = Path(out_dir) / "failed.json"
    write_json(
        path,
        {
            "error": str(exc),
            "type": type(exc).__name__,
            "traceback": "".join(traceback.format_exception(exc)),
        },
    )
    return path


def _as_stopped() -> Stopped:
    """The stop Lightning's own SIGTERM flag means. Lightning notes a SIGTERM before medmtl's
    handler runs and ends the stage with ``SIGTERMException``, a ``SystemExit`` whose status is
    0; when that comes first, the run would end as if it had finished (seen once in CI)."""
    import signal

    return Stopped(signal.SIGTERM)


def _kept_checkpoints(out_dir: Path) -> str:
    """What a run stopped during training keeps: its last epoch's checkpoint, to resume from."""
    last = Path(out_dir) / "checkpoints" / "last.ckpt"
    if last.is_file():
        return f"the epochs finished before it are kept; resume with ckpt_path={last}"
    return f"no epoch had finished, so {out_dir} has no checkpoint to resume from"


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, test the best checkpoint, write ``metrics.json`` and the resolved config.

    Returns the metrics (``val/overall`` is what a sweeper optimises).
    """
    start = time.time()
    settings = check_train_config(cfg)  # every setting, typed, parsed once here
    run = settings.run
    wandb_cfg = OmegaConf.select(cfg, "logger.wandb")
    wandb_own = None  # medmtl's W&B settings, checked before any work
    if wandb_cfg is not None and "_target_" in wandb_cfg:
        lightning, wandb_own = split_own_settings(OmegaConf.to_container(wandb_cfg, resolve=True))
        if lightning["mode"] == "online":  # W&B's server and a login, asked once a run
            check_online("logger.wandb.offline=false")
    # a distillation teacher is opened (and refused) before anything is written
    teacher = open_teacher(run.distill, settings.data) if run.distill.teacher else None
    # so is the model a fine-tuning starts from (a resumed one goes on from its own state)
    initial = open_initial(run.init_from, settings.data) if run.init_from else None
    if not run.ckpt_path and (last := requeued_checkpoint(cfg.paths.output_dir)):
        # SLURM requeued this job (pre-emption, time limit): go on from its last epoch
        log.info("SLURM requeued this job: resuming from %s", last)
        run.ckpt_path = str(last)
        with open_dict(cfg):
            cfg.ckpt_path = run.ckpt_path
    quiet_third_party(resuming=bool(run.ckpt_path))
    resumed = resume_in_run_folder(cfg, settings.net) if run.ckpt_path else None
    out_dir = ensure_output_dir(cfg.paths.output_dir, "hydra.run.dir")
    (out_dir / "failed.json").unlink(missing_ok=True)  # from an earlier attempt in this folder
    atomic_write_text(out_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if run.seed is not None:  # `if run.seed` would skip seed 0
        L.seed_everything(run.seed, workers=True)
    if run.threads:
        torch.set_num_threads(run.threads)

    dm = datamodule_from_config(settings.data)
    dm.prepare_data()
    dm.setup()
    if resumed is not None and list(resumed["class_names"]) != list(dm.classes):
        raise ConfigError(
            f"ckpt_path={run.ckpt_path}: trained on the classes {list(resumed['class_names'])}, "
            f"the data now has {list(dm.classes)}; resume with the same data."
        )
    module = build_module(settings, dm)
    if initial is not None and not run.ckpt_path:
        start_from(module, initial, str(run.init_from))
    module.use_channels_last(run.channels_last)
    if teacher is not None:
        attach_teacher(module, teacher, run.distill)
    callbacks = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(
        cfg.get("logger"),
        wandb_identity(settings, cfg.paths.get("output_root")) if wandb_own is not None else None,
    )
    if (
        wandb_own is not None
        and wandb_own["n_images"]
        and any(map(is_wandb, loggers))
        and wandb_mode(online=False) != "disabled"
    ):
        callbacks.append(ValidationMasks(wandb_own["n_images"]))
    try:
        metrics = _fit_and_test(cfg, run, dm, module, callbacks, loggers, out_dir, start,
                                wandb_own)  # fmt: skip
    except SIGTERMException:  # while validating or testing: see _as_stopped
        _close_loggers(loggers, failed=True)
        raise _as_stopped() from None
    except BaseException:
        _close_loggers(loggers, failed=True)
        raise
    _close_loggers(loggers, failed=False)
    return metrics


def open_initial(path: str, data: Any) -> OpenedModel:
    """The model ``init_from`` names, checked to be one network that reads images as this run
    does."""
    opened = open_model(path)
    option = f"init_from={path}"
    if getattr(opened.module.net, "members", None) is not None:
        raise ConfigError(
            f"{option}: an ensemble; a fine-tuning starts from one model (a member's run folder "
            "or checkpoint)."
        )
    check_reads_like(opened, data, option)
    return opened


def start_from(module: MultiTaskModule, opened: OpenedModel, path: str) -> None:
    """A fine-tuning's start: ``module``'s network takes the learned weights of ``opened``
    (not its temperature, unlike-training score or shift reference, which are fitted anew
    after training)."""
    option = f"init_from={path}"
    check_classes(opened, module.class_names, option)
    try:
        module.net.start_from(opened.module.net)
    except ValueError as exc:
        raise ConfigError(
            f"{option}: another network than this run's ({exc}); set model.arch and "
            "model.encoder as it was trained."
        ) from exc
    log.info("Fine-tuning from %s", path)


def _close_loggers(loggers: list, failed: bool) -> None:
    """Close the loggers so a run neither hangs nor loses its logs; a W&B run is finished here,
    not at the process's exit (the next job of a sweep may run in the same process, and its
    offline file is complete once the run returns)."""
    for lg in loggers:
        lg.finalize("failed" if failed else "success")
        if is_wandb(lg):
            import wandb

            wandb.finish(exit_code=1 if failed else 0)


def _fit_and_test(
    cfg: DictConfig,
    run: TrainSettings,
    dm: CasesDataModule,
    module: MultiTaskModule,
    callbacks: list,
    loggers: list,
    out_dir: Path,
    start: float,
    wandb_own: dict[str, Any] | None = None,
) -> dict[str, Any]:
    precision, why = choose_precision(
        cfg.trainer.precision,  # every trainer config has one (conf/trainer/cpu.yaml, gpu.yaml)
        str(cfg.trainer.accelerator),
        module.net,
        (dm.loader.batch_size, module.net_settings.in_channels, dm.preprocess.image_size,
         dm.preprocess.image_size),
        processes=training_processes(cfg.trainer),
    )  # fmt: skip
    log.info("trainer.precision=%s (%s)", precision, why)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, precision=precision
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for lg in loggers:  # W&B: flat keys, with the code version and the split files' hashes
        lg.log_hyperparams(run_record(resolved, dm.split_files()) if is_wandb(lg) else resolved)

    try:
        trainer.fit(module, datamodule=dm, ckpt_path=run.ckpt_path, weights_only=True)
    except (Stopped, SIGTERMException) as exc:
        stop = exc if isinstance(exc, Stopped) else _as_stopped()
        raise stop.keeping(_kept_checkpoints(out_dir)) from None
    if trainer.interrupted:
        raise ConfigError(
            "training was interrupted; resume with ckpt_path=<run>/checkpoints/last.ckpt"
        )

    metrics: dict[str, Any] = {}
    per, figures = None, []
    if run.test:
        # the checkpoint callback that keeps the best model (the other one keeps the last epoch)
        ckpt_cb = next((c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
        best = ckpt_cb.best_model_path if ckpt_cb is not None else ""
        if best:
            state = load_checkpoint(best)["state_dict"]
            module.load_state_dict(state)
            log.info("Evaluating the best checkpoint %s", best)
        else:
            log.warning(
                "No checkpoint was saved (fast_dev_run or no callbacks): testing the last weights."
            )
        module.configure_evaluation(tta=run.tta)
        quantile, dims = run.unlike.quantile, run.shift.dims
        if run.calibration.temperature:
            metrics.update(
                calibrate_module(module, dm, alpha=run.conformal.alpha,
                                 by_class=run.conformal.by_class, unlike_quantile=quantile,
                                 shift_dims=dims)
            )  # fmt: skip
        else:
            metrics.update(fit_feature_scores(module, dm, quantile, dims))
        if best and trainer.is_global_zero:
            save_calibration(best, module)
        trainer.validate(module, datamodule=dm, verbose=False)
        module.configure_evaluation(split="test")
        trainer.test(module, datamodule=dm, verbose=False)
        test_metrics, per, groups = score_split(module, dm, "test", trainer)
        metrics.update(module.results.get("val", {}))
        metrics.update(test_metrics)
        metrics["best_ckpt"] = str(best) if best else None  # also when none: a finished run
    if trainer.is_global_zero:
        for lg in loggers:  # flush, then one CSV log again if the run was resumed
            if hasattr(lg, "save"):
                lg.save()
        merge_csv_logs(out_dir / "csv")
    if run.test and trainer.is_global_zero:
        figures = write_split_outputs(
            out_dir,
            module,
            "test",
            metrics,
            per,
            groups,
            out_dir / "csv" / "metrics.csv",
            figures=run.figures,
            cases=dm.cached("test"),
        )
    record = module.describe().update(metrics)
    record.resumed_from = run.ckpt_path
    record.init_from = run.init_from
    record.world_size = int(trainer.world_size)
    # how the processes were started: LightningEnvironment (local), SLURMEnvironment (srun), ...
    env = getattr(trainer.strategy, "cluster_environment", None)
    record.cluster_environment = type(env).__name__ if env is not None else None
    record.precision, record.precision_reason = precision, why
    record.epochs, record.global_step = int(trainer.current_epoch), int(trainer.global_step)
    record.wall_time_s = round(time.time() - start, 1)
    record.update(peak_memory_mb())
    wandb_loggers = [  # WANDB_MODE=disabled: a run that records nothing
        lg for lg in loggers if is_wandb(lg) and not getattr(lg.experiment, "disabled", False)
    ] if trainer.is_global_zero else []  # fmt: skip
    for lg in wandb_loggers:  # where the run is in W&B, for the ensemble and the tables
        record.update({"wandb/run_id": lg.experiment.id, "wandb/name": lg.experiment.name,
                       "wandb/group": lg.experiment.group})  # fmt: skip
    metrics = record.to_metrics()
    if trainer.is_global_zero:  # under DDP every rank gets here; one writes
        write_record(out_dir, record)
        print_metrics(metrics)
        log.info("Run folder: %s", out_dir)
        for lg in wandb_loggers:
            _finish_wandb(
                lg.experiment, module, dm, out_dir, metrics, per, figures, wandb_own or {}
            )
    return metrics


def _finish_wandb(
    run: Any,
    module: MultiTaskModule,
    dm: CasesDataModule,
    out_dir: Path,
    metrics: dict[str, Any],
    per: Any,
    figures: list[Path],
    own: dict[str, Any],
) -> None:
    """The test table and masks, the figures, the summary and, with ``log_model``, the model
    artifact."""
    n = own.get("n_images", N_IMAGES)
    samples = module.test_samples() if per is not None and module.samples else None
    guarded("log the test predictions",
            lambda: log_evaluation(run, out_dir, "test", metrics, per, samples, n, figures))  # fmt: skip
    best = metrics.get("best_ckpt")
    if own.get("log_model") and best:

        def artifact() -> None:
            onnx = None
            if own.get("log_onnx"):
                from medmtl.inference.export import export_onnx

                onnx = export_onnx(best, out_dir / "model.onnx")
            log_model_artifact(run, run.name, Path(best), out_dir, metrics, dm.split_files(), onnx)

        guarded("log the model artifact", artifact)
    elif own.get("log_model"):
        log.warning("logger.wandb.log_model=true: no best checkpoint to log (a debug run?).")

"""What ``medmtl-eval`` does: test a checkpoint on a split of its own data set, or on another
data set (external validation), and write metrics.json, predictions and figures.

On another data set the model keeps its own preprocessing (from the checkpoint) and its
classes; the data set's classes are mapped onto them (``class_map``; by default the same
names). When the data set has fewer classes than the model (BUS-BRA: benign and malignant for
a normal/benign/malignant model) the classification is scored over the mapped classes only:
the probabilities are renormalised over them (the benign-vs-malignant AUC uses
P(malignant) / (P(benign) + P(malignant))), accuracy is that of the arg-max over them, and an
image the model calls a class the data set lacks (normal) is counted in
``called_<class>_rate`` (each one a miss of a lesion image).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from medmtl.data.build import datamodule_from_config
from medmtl.data.cache import CachedCase
from medmtl.data.datamodule import PREPROCESS_KEYS, CasesDataModule
from medmtl.data.manifest import UNCERTAINTY_COLUMNS
from medmtl.errors import ConfigError, DataError, MedmtlError
from medmtl.io.files import atomic_write_text, ensure_output_dir
from medmtl.models.adapt import adapt_batchnorm
from medmtl.models.shift import require_references
from medmtl.reporting.breakdown import Group, breakdown, flat_metrics, render
from medmtl.reporting.evaluation import write_evaluation_figures
from medmtl.reporting.per_image import (
    PerImage,
    metrics_dict,
    restrict,
    write_lesions,
    write_masks,
    write_predictions,
)
from medmtl.reporting.summary import print_metrics, write_record
from medmtl.settings.checks import choice
from medmtl.settings.evaluation import ADAPT_CHOICES, AS_TRAINED, EvalSettings, ShiftPower
from medmtl.settings.model import GateSettings
from medmtl.training.module import MultiTaskModule
from medmtl.workflows.calibrate import split_features
from medmtl.workflows.logs import quiet_third_party
from medmtl.workflows.members import open_model
from medmtl.workflows.shift import batch_power
from medmtl.workflows.wandb_runs import (
    code_version,
    flat_config,
    log_to_new_run,
    recorded_identity,
    split_record,
    wandb_request,
)

log = logging.getLogger(__name__)


def per_image_results(module: MultiTaskModule, dm: CasesDataModule, split: str) -> PerImage:
    """The per-image outputs of the last test run, named by the cases' ids, with each case's
    data set and metadata.

    Every image of the split must be there: a lost image is an error, never a shorter file.
    """
    cases = dm.cases(split)
    got = {k: v.numpy() for k, v in module.per_image.items()}
    index = got["index"].tolist()
    if sorted(index) != list(range(len(cases))):
        raise MedmtlError(
            f"{split}: the evaluation returned {len(index)} of {len(cases)} images; "
            "nothing was written. Re-run the evaluation."
        )
    keys = list(dict.fromkeys(k for c in cases for k in c.meta))
    datasets = [cases[i].dataset or dm.name for i in index]
    prob = got.get("prob")
    sets = module.answer_sets
    return PerImage(
        ids=[cases[i].case_id for i in index],
        classes=tuple(dm.classes),
        label=got["label"],
        prob=prob,
        tp=got.get("tp"),
        gt=got.get("gt"),
        pred=got.get("pred"),
        lesion_counts=got.get("lesion_counts"),
        dataset=datasets[0] if len(set(datasets)) == 1 else datasets,
        split=split,
        meta={k: [cases[i].meta.get(k, "") for i in index] for k in keys},
        answer_set=sets.predict(prob) if sets is not None and prob is not None else None,
        min_mask_agreement=getattr(module.net, "min_mask_agreement", None),
        # a model without an unlike-training score gives NaN: no column rather than an empty one
        **{c: got[c] for c in UNCERTAINTY_COLUMNS if c in got and np.isfinite(got[c]).any()},
    )


def tested_whole(trainer: L.Trainer) -> bool:
    """False for a debug run that tests only some batches: it writes no predictions file
    rather than a partial one."""
    limit = trainer.limit_test_batches
    whole = not trainer.fast_dev_run and isinstance(limit, float) and limit == 1.0
    if not whole:
        log.warning("Test limited to some batches (debug run): no predictions file.")
    return whole


def write_per_image(out_dir: Path, per: PerImage | None) -> Path | None:
    """Write ``predictions_<split>.csv`` (nothing for a debug run's partial test)."""
    if per is None:
        return None
    return write_predictions(out_dir / f"predictions_{per.split}.csv", per)


def class_mapping(
    data_classes: Sequence[str], model_classes: Sequence[str], class_map: Mapping | None
) -> dict[str, str]:
    """Each data class -> the model class it is scored as (``class_map``; else the same name)."""
    mapping = {str(k): str(v) for k, v in (class_map or {}).items()}
    if not mapping:
        mapping = {c: c for c in data_classes}
    missing = [c for c in data_classes if c not in mapping]
    wrong = sorted({mapping[c] for c in data_classes if c in mapping} - set(model_classes))
    if missing or wrong:
        example = ", ".join(
            f"{c}: {c if c in model_classes else model_classes[-1]}" for c in data_classes
        )
        what = (
            f"the data's class(es) {', '.join(missing)} have no model class"
            if missing
            else f"{', '.join(wrong)} is not a class of the model ({', '.join(model_classes)})"
        )
        raise ConfigError(
            f"class_map: {what}; map every class of the data ({', '.join(data_classes)}) onto "
            f"the model's, e.g. class_map={{{example}}} (docs/data.md)."
        )
    return mapping


def external_data_config(selected: Mapping[str, Any], trained: Mapping[str, Any]) -> dict:
    """Another data set (``data=<name>`` of medmtl-eval) with the checkpoint's preprocessing."""
    out = dict(selected)
    out.update({k: trained[k] for k in PREPROCESS_KEYS if k in trained})
    return out


def score_split(
    module: MultiTaskModule,
    dm: CasesDataModule,
    split: str,
    trainer: L.Trainer,
    by: Sequence[str] = (),
) -> tuple[dict[str, Any], PerImage | None, dict[str, list[Group]]]:
    """The metrics of the split just tested, its per-image results and its breakdowns.

    A split whose data set has fewer classes than the model is scored over its classes
    (:func:`medmtl.reporting.per_image.restrict`); the metrics then come from the per-image
    results. Each column in ``by`` (and ``dataset`` when the split mixes data sets) adds its
    per-value metrics.
    """
    per = per_image_results(module, dm, split) if tested_whole(trainer) else None
    eval_classes = dm.split_classes(split)
    if eval_classes != list(module.class_names) and per is not None and per.prob is not None:
        per = restrict(per, module.class_names, eval_classes)
        metrics = metrics_dict(per, split)
        metrics["eval/model_classes"] = list(module.class_names)  # the confusion's columns
    else:
        metrics = dict(module.results[split])
        if per is not None:  # what the torch metrics do not keep (lesions left empty, AURC,
            # answer sets, referrals, per-class Dice, weighted F1...), from the same images
            for key, value in metrics_dict(per, split).items():
                metrics.setdefault(key, value)
    metrics["eval/classes"] = eval_classes
    columns = list(by)
    if per is not None and len(set(per.datasets())) > 1 and "dataset" not in columns:
        columns.insert(0, "dataset")
    groups = {c: breakdown(per, c) for c in columns} if per is not None else {}
    for g in groups.values():
        metrics.update(flat_metrics(g, split))
    return metrics, per, groups


def write_split_outputs(
    out_dir: Path,
    module: MultiTaskModule,
    split: str,
    metrics: dict[str, Any],
    per: PerImage | None,
    groups: dict[str, list[Group]],
    run_csv: Path | None = None,
    save_masks: bool = False,
    figures: bool = True,
    cases: Sequence[CachedCase] | None = None,
) -> list[Path]:
    """``predictions_<split>.csv``, ``lesions_<split>.csv`` (with a segmentation head;
    ``cases``: the split's cached cases, for the lesions' original areas), ``by_<column>.md|csv``,
    the evaluation figures (unless ``figures`` is false) and, with ``save_masks``,
    ``masks_<split>.npz`` (the images and the masks that were scored); returns the figures
    written."""
    write_per_image(out_dir, per)
    sets = module.answer_sets
    coverage = 1 - sets.alpha if sets is not None else None
    for column, g in groups.items():
        for fmt in ("md", "csv"):
            atomic_write_text(out_dir / f"by_{column}.{fmt}", render(g, fmt, coverage))
        log.info("By %s:\n%s", column, render(g, "md", coverage))
    samples = module.test_samples()
    if per is not None and "lesions" in samples:
        if len(np.unique(samples["index"].numpy())) == len(per.ids):
            write_lesions(out_dir / f"lesions_{split}.csv", per.ids, samples, cases)
        else:  # each process kept the masks of its own images only
            log.warning(
                "no lesions_%s.csv: the test ran in several processes; medmtl-eval in one "
                "process writes it.",
                split,
            )
    if save_masks and per is not None:
        write_masks(out_dir / f"masks_{split}.npz", per.ids, samples)
    classes = list(module.class_names)
    if per is not None and per.prob is not None and list(per.classes) != classes:
        # the figures show what was scored: the data's classes, in image order
        order = torch.from_numpy(np.argsort(samples["index"].numpy(), kind="stable"))
        samples = {k: v[order] for k, v in samples.items()}
        samples["prob"], samples["label"] = torch.from_numpy(per.prob), torch.from_numpy(per.label)
        if "prob_uncalibrated" in samples:  # the same renormalisation over the data's classes
            keep = [classes.index(c) for c in per.classes]
            kept = samples["prob_uncalibrated"][:, keep]
            samples["prob_uncalibrated"] = kept / kept.sum(1, keepdim=True).clamp_min(1e-12)
        classes = list(per.classes)
    if not figures:
        return []
    return write_evaluation_figures(out_dir, split, metrics, samples, classes, run_csv)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Re-evaluate a checkpoint on ``cfg.split`` of its own data (the settings stored in it,
    ``data.*`` overriding them) or of another data set (``data=<name>``)."""
    quiet_third_party()
    settings = EvalSettings.from_dict(cfg)
    opened = open_model(cfg.ckpt_path)
    module = opened.module
    if settings.save_masks and module.task == "cls":
        raise ConfigError("save_masks=true: this model has no segmentation head; drop the option.")
    module.use_channels_last(settings.channels_last)
    gate = settings.gate()
    if settings.empty_mask_class != AS_TRAINED:
        index = GateSettings(empty_mask_class=settings.empty_mask_class).index(module.class_names)
        if index is not None and module.task != "multitask":
            raise ConfigError("empty_mask_class needs a multi-task checkpoint.")
        gate["empty_mask_index"] = index
    conformal = {k: v for k, v in settings.conformal.items() if v is not None}
    sets = module.answer_sets
    if conformal:
        if sets is None:
            raise ConfigError(
                f"conformal.*: {cfg.ckpt_path} has no conformal calibration (trained before it "
                "existed, or an ensemble); drop the option."
            )
        sets = sets.with_settings(conformal.get("alpha"), conformal.get("by_class"))
    module.configure_evaluation(
        tta=opened.tta if settings.tta is None else settings.tta,
        gate=gate,
        postprocess=settings.postprocess,
        answer_sets=sets,
        calibrated=settings.calibrated,
    )
    trained = opened.data
    selected = OmegaConf.to_container(cfg.get("data") or OmegaConf.create({}), resolve=True)
    if "source" in selected:  # data=<name>: another data set
        data_cfg = external_data_config(selected, trained)
    else:  # the checkpoint's data, with the settings given here (null: as trained)
        changes = {k: v for k, v in selected.items() if v is not None}
        data_cfg = OmegaConf.to_container(
            OmegaConf.merge(OmegaConf.create(trained), changes), resolve=True
        )
    # auto is a training-time choice (a timed step); an evaluation runs in full precision
    precision = "32-true" if str(cfg.trainer.precision) == "auto" else cfg.trainer.precision
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, precision=precision)
    run_csv = None
    if not opened.members:
        run_csv = Path(cfg.ckpt_path).resolve().parent.parent / "csv" / "metrics.csv"
    return test_module(
        module,
        data_cfg,
        settings.split,
        trainer,
        ensure_output_dir(cfg.paths.output_dir, "hydra.run.dir"),
        opened.record,
        run_csv,
        class_map=settings.class_map,
        by=settings.by,
        adapt=settings.adapt,
        save_masks=settings.save_masks,
        wandb=eval_wandb(cfg, opened),
        figures=settings.figures,
        shift=settings.shift if settings.shift.test else None,
    )


def test_module(
    module: MultiTaskModule,
    data_cfg: DictConfig | dict,
    split: str,
    trainer: L.Trainer,
    out_dir: Path,
    extra: dict[str, Any] | None = None,
    run_csv: Path | None = None,
    class_map: Mapping | None = None,
    by: Sequence[str] = (),
    adapt: str = "none",
    save_masks: bool = False,
    wandb: dict[str, Any] | None = None,
    figures: bool = True,
    shift: ShiftPower | None = None,
) -> dict[str, Any]:
    """Test ``module`` on one split (``all``: every image) of the data ``data_cfg`` describes;
    write ``metrics.json``, ``predictions_<split>.csv``, the figures and, for each column in
    ``by`` (and ``dataset`` when several data sets are combined), ``by_<column>.md|csv``.

    ``adapt="bn"`` first re-estimates the batch-norm statistics on the split's images
    (:func:`medmtl.models.adapt.adapt_batchnorm`, no labels used). ``wandb`` (a request of
    :mod:`medmtl.workflows.wandb_runs` with its ``job_type`` and ``config``) also logs the
    evaluation as a W&B run. ``shift``: also the shift test of the split's images against the
    model's reference, and of random batches of them (:func:`medmtl.workflows.shift.batch_power`).
    """
    choice("adapt", adapt, ADAPT_CHOICES)
    dm = datamodule_from_config(data_cfg)
    dm.prepare_data()
    if split == "all":
        dm.load()
    else:
        dm.setup("test")
    data_classes = list(dm.classes)
    mapping = class_mapping(data_classes, module.class_names, class_map)
    dm.relabel(module.class_names, mapping)
    module.configure_evaluation(split=split)
    adapted = 0
    if adapt == "bn":
        try:
            adapted = adapt_batchnorm(module.net, (b["image"] for b in dm.dataloader(split)))
        except ValueError as exc:
            raise DataError(f"{split} split: {exc}") from exc
        log.info("adapt=bn: batch-norm statistics re-estimated on %d %s images", adapted, split)
    trainer.test(module, dataloaders=dm.dataloader(split), verbose=False)
    scores, per, groups = score_split(module, dm, split, trainer, by)
    record = module.describe().update(scores).merge(extra)
    record.num_images = len(dm.cases(split))
    record.data_name = dm.name  # the data evaluated on, which data= may have changed
    record.eval_split, record.adapt = split, adapt
    if adapted:
        record.values["adapt/images"] = adapted
    if mapping != {c: c for c in data_classes}:
        record.values["eval/class_map"] = mapping
    if shift is not None and trainer.is_global_zero:
        refs = require_references(module.net.shift_references(), "shift.test")
        features, _ = split_features(module, dm, split)
        thumbs = [c.thumb for c in dm.cached(split)]
        record.values.update(batch_power(refs, features, thumbs, shift))
    metrics = record.to_metrics()
    if trainer.is_global_zero:  # under DDP every rank gets here; one writes
        drawn = write_split_outputs(
            out_dir,
            module,
            split,
            metrics,
            per,
            groups,
            run_csv,
            save_masks,
            figures,
            cases=dm.cached(split),
        )
        if wandb is not None:
            samples = module.test_samples() if module.samples else None
            config = {**wandb["config"], **split_record(dm.split_files())}
            record.update(log_to_new_run(wandb, wandb["job_type"], out_dir, split, metrics, per,
                                         samples, drawn, config))  # fmt: skip
        metrics = write_record(out_dir, record)  # last: the outputs above are complete
        print_metrics(metrics, (split,))
        log.info("Wrote %s", out_dir / "metrics.json")
    return metrics


def eval_wandb(cfg: DictConfig, opened: Any) -> dict[str, Any] | None:
    """The W&B run of ``medmtl-eval ... logger=wandb``: named after the evaluated model's own
    run and grouped with it (its recorded name and group), else after its folder."""
    request = wandb_request(
        OmegaConf.to_container(cfg.logger.wandb, resolve=True)
        if OmegaConf.select(cfg, "logger.wandb") is not None
        else None
    )
    if request is None:
        return None
    model = Path(str(cfg.ckpt_path))
    known = recorded_identity(model)
    model_name = known.get("name") or (model.parent.parent.name if model.suffix == ".ckpt"
                                       else model.name)  # fmt: skip
    data_name = OmegaConf.select(cfg, "data.name") or opened.data.get("name") or "data"
    request["name"] = request["name"] or f"{model_name}-eval-{data_name}-{cfg.split}"
    request["group"] = request["group"] or known.get("group") or str(cfg.get("task_name"))
    request["job_type"] = "eval"
    request["config"] = {
        **flat_config(OmegaConf.to_container(cfg, resolve=True)),
        **{f"model/{k}": v for k, v in opened.record.items()},
        "code/git_commit": code_version(),
    }
    return request

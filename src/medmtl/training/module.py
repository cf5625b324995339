"""The LightningModule: one shared-encoder network, the λ-weighted loss and the study's metrics."""

from __future__ import annotations

import inspect
import logging
import math
import random
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from medmtl.data.manifest import UNCERTAINTY_COLUMNS
from medmtl.data.splits import cv_folds_of, fold_of
from medmtl.data.transforms import amplitude_mix
from medmtl.errors import ConfigError, MedmtlError
from medmtl.metrics import dice_iou, disagreement, instances, lesion_counts, overall_score
from medmtl.models.calibration import calibration_record, drop_temperatures
from medmtl.models.checkpoint import CONFORMAL_KEY, load_checkpoint, stored_net
from medmtl.models.conformal import AnswerSets
from medmtl.models.ensemble import combine_views, mirrored_back
from medmtl.models.multitask import EMPTY_LOGIT, MultiTaskNet
from medmtl.models.postprocess import PostProcess
from medmtl.preprocess.pipeline import PreprocessSettings
from medmtl.settings import LossSettings
from medmtl.settings.checks import choice
from medmtl.settings.data import Augment
from medmtl.settings.evaluation import SPLITS
from medmtl.settings.model import NetSettings
from medmtl.settings.optimizer import OptimizerSettings
from medmtl.settings.record import RunRecord
from medmtl.training.losses import MultiTaskLoss, distillation_loss
from medmtl.training.metrics import (
    SegMetrics,
    classification_metrics,
    confusion_counts,
    flatten_results,
)
from medmtl.training.progressive import ProgressiveResize, resized_batch

EVAL_SPLITS = SPLITS  # "all": every image (another data set)
KEEP = object()  # configure_evaluation: leave the answer sets as they are
log = logging.getLogger(__name__)


# the outputs that hold several predictions of each image (an ensemble's members, flip views)
VIEWS = ("member_cls", "member_seg", "view_cls", "view_seg")


def _key(split: str) -> str:
    # nn.ModuleDict keys may not shadow nn.Module attributes such as `train`
    return f"{split}_metrics"


@dataclass
class Teacher:
    """A trained network the module learns to match as well (knowledge distillation,
    ``distill.*``). Not a submodule: the student's checkpoint holds the student alone."""

    net: nn.Module
    weight: float  # L = (1 - weight)·L_task + weight·L_distill
    temperature: float
    source: str  # what it was opened from, for the record


class NonFiniteLossError(MedmtlError):
    """The loss became NaN or infinite: training stops before anything is written."""


class MultiTaskModule(L.LightningModule):
    """Trains :class:`MultiTaskNet` with :class:`MultiTaskLoss`; logs ``<split>/<metric>``.

    All constructor arguments are plain values so the checkpoint holds everything needed to
    rebuild the model (and loads with ``torch.load(weights_only=True)``).
    """

    def __init__(
        self,
        model: dict,
        loss: dict,
        optimizer: dict,
        class_names: Sequence[str],
        scheduler: dict | None = None,
        data: dict | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        # the checkpoint keeps the schema's full plain dict (its defaults filled in, checked)
        loss = LossSettings.from_dict(loss).to_dict()
        self.save_hyperparameters()
        self.class_names = list(class_names)
        # the network's settings, read once (the checkpoint stores their plain dict)
        self.net_settings = NetSettings.from_dict(model)
        self.task = self.net_settings.task
        self.net = MultiTaskNet.from_settings(self.net_settings, self.class_names)
        self.criterion = MultiTaskLoss(task=self.task, num_classes=len(self.class_names), **loss)
        self.cls_metrics = nn.ModuleDict(
            {_key(s): classification_metrics(len(self.class_names)) for s in EVAL_SPLITS}
            if self.task != "seg"
            else {}
        )
        self.seg_metrics = nn.ModuleDict(
            {_key(s): SegMetrics() for s in EVAL_SPLITS} if self.task != "cls" else {}
        )
        self.postprocess = PostProcess.from_dict(self.net_settings.postprocess)
        self.preprocess = PreprocessSettings.from_dict(data)  # to show test images as they were
        augment = Augment.from_dict((data or {}).get("augment"))
        # (probability, ratio) of the batch-level amplitude mixing (data.augment.amplitude_mix)
        self.amplitude_mix = (float(augment.amplitude_mix), float(augment.amplitude_mix_ratio))
        self.progressive = ProgressiveResize.from_data(data)  # train small, finish large
        self.teacher: Teacher | None = None  # a run-time choice (medmtl.workflows.distill)
        # how the next evaluation runs: set through configure_evaluation only
        self.tta = False  # test-time horizontal flip
        # conformal answer sets, calibrated after training (medmtl.workflows.calibrate)
        self.answer_sets: AnswerSets | None = None
        self.eval_split = "test"  # what test_step reports as
        self.channels_last = False  # a run-time choice (use_channels_last), not a hyper-parameter
        self._resuming = False  # set when Lightning restores a checkpoint to continue training
        self._resume_rng: dict[str, Any] | None = None
        self.results: dict[str, dict[str, Any]] = {}
        # per-image outputs of the last test run, for the evaluation figures
        self.samples: dict[str, list[torch.Tensor]] = {}
        # per-image numbers of the last test run over all ranks, for predictions_<split>.csv
        self.per_image: dict[str, torch.Tensor] = {}

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> tuple[MultiTaskModule, dict[str, Any]]:
        """The module a medmtl checkpoint holds, in eval mode, and the checkpoint itself.

        Loaded with ``weights_only=True`` (:func:`medmtl.models.checkpoint.load_checkpoint`);
        no encoder weights are downloaded, they come from the state dict.
        """
        ckpt = load_checkpoint(path)
        hp = dict(ckpt["hyper_parameters"])
        trained = stored_net(hp)
        # the encoder's weights come from the state dict, not from a download
        module = cls(**{**hp, "model": replace(trained, encoder_weights=None).to_dict()})
        # what it was trained from (metrics.json, the card)
        module.hparams["model"] = hp["model"]
        module.net_settings = trained
        module.load_state_dict(ckpt["state_dict"])
        module.configure_evaluation(answer_sets=AnswerSets.from_dict(ckpt.get(CONFORMAL_KEY)))
        module.eval()
        return module, ckpt

    def configure_evaluation(
        self,
        *,
        split: str | None = None,
        tta: bool | None = None,
        gate: Mapping[str, Any] | None = None,
        postprocess: Mapping[str, Any] | None = None,
        answer_sets: AnswerSets | None | object = KEEP,
        calibrated: bool | None = None,
    ) -> None:
        """How the next evaluation runs; every command sets it here (None keeps the current
        choice).

        ``split``: what :meth:`test_step` reports as. ``tta``: test-time horizontal flip.
        ``gate``: any of ``empty_mask_index`` (None: no gate) and
        :data:`~medmtl.settings.evaluation.GATE_KEYS`, checked (``as_trained`` keeps the
        network's). ``postprocess``: changes to the mask post-processing. ``answer_sets``: the
        conformal calibration to apply (None: none). ``calibrated=False``: the temperatures back
        to 1 (the uncalibrated probabilities).
        """
        if split is not None:
            self.eval_split = choice("split", split, EVAL_SPLITS)
        if tta is not None:
            self.tta = bool(tta)
        if gate:
            self.net.gate = self.net.gate.changed(gate, len(self.class_names))
        if postprocess:
            self.postprocess = PostProcess.from_dict({**self.postprocess.to_dict(), **postprocess})
        if answer_sets is not KEEP:
            self.answer_sets = answer_sets  # type: ignore[assignment]
        if calibrated is False:
            drop_temperatures(self.net)

    def use_channels_last(self, on: bool = True) -> None:
        """Run the network in channels-last memory format (faster convolutions on CPU)."""
        self.channels_last = on
        fmt = torch.channels_last if on else torch.contiguous_format
        self.net.to(memory_format=fmt)

    def _memory_format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        return combine_views(self.views(x))

    def views(self, x: torch.Tensor) -> list[dict[str, torch.Tensor | None]]:
        """The network's outputs that :meth:`forward` averages: the image's, and with test-time
        flip (``tta``, in evaluation) its mirror image's, flipped back."""
        x = self._memory_format(x)
        out = [self.net(x)]
        if self.tta and not self.training:
            out.append(mirrored_back(self.net(torch.flip(x, dims=[3]))))
        return out

    # -- steps ----------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        image, mask = batch["image"], batch["mask"]
        if self.progressive.active:
            size = self.progressive.size_at(self.current_epoch, self.trainer.max_epochs or 1)
            image, mask = resized_batch(image, mask, size)
        if self.amplitude_mix[0] > 0:  # a batch-level augmentation
            image = amplitude_mix(image, *self.amplitude_mix)
        out = self(image)
        losses = self.criterion(out, mask, batch["label"])
        if self.teacher is not None:
            with torch.no_grad():
                target = self.teacher.net(self._memory_format(image))
            kd = distillation_loss(out, target, self.criterion.seg_weight, self.teacher.temperature)
            w = self.teacher.weight
            losses["loss_distill"] = kd
            losses["loss"] = (1 - w) * losses["loss"] + w * kd
        if not torch.isfinite(losses["loss"]):
            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            raise NonFiniteLossError(
                f"non-finite training loss at epoch {self.current_epoch}, step {self.global_step} "
                f"({parts}); stopped before writing results. Lower optimizer.lr, keep "
                "trainer.precision=32, or check the data (medmtl-data audit)."
            )
        bs = batch["image"].shape[0]
        parts = {f"train/{k}": v for k, v in losses.items() if k != "loss"}
        self.log_dict(parts, batch_size=bs)
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=bs)
        if self.criterion.log_vars is not None:
            self.log_dict(
                {f"train/{k}": v for k, v in self.criterion.task_weights().items()}, batch_size=bs
            )
        return losses["loss"]

    def _eval_step(
        self, batch: dict, split: str, out: dict[str, torch.Tensor | None] | None = None
    ) -> dict[str, torch.Tensor | None]:
        out = self(batch["image"]) if out is None else out
        losses = self.criterion(out, batch["mask"], batch["label"])
        # sync_dist: under DDP the epoch's loss is the mean over all ranks' images
        self.log(
            f"{split}/loss", losses["loss"], batch_size=batch["image"].shape[0], sync_dist=True
        )
        if out["seg"] is not None and self.postprocess.active:
            out = {**out, "seg": self._postprocessed(out["seg"])}
        if out["cls"] is not None:
            # in float: bfloat16 probabilities (mixed precision) tie, and ties change the AUC
            probs = torch.softmax(out["cls"].float(), dim=1)
            self.cls_metrics[_key(split)].update(probs, batch["label"])
        if out["seg"] is not None:
            self.seg_metrics[_key(split)].update(out["seg"], batch["mask"])
        return out

    def _postprocessed(self, seg: torch.Tensor) -> torch.Tensor:
        """Mask logits after post-processing: removed pixels get the empty logit, filled ones
        its opposite; unchanged pixels keep their logit."""
        mask = (seg.detach() >= 0).cpu().numpy()[:, 0]
        done = torch.from_numpy(np.stack([self.postprocess(m) for m in mask]))[:, None]
        done = done.to(seg.device)
        before = seg >= 0
        seg = torch.where(before & ~done, torch.full_like(seg, EMPTY_LOGIT), seg)
        return torch.where(~before & done, torch.full_like(seg, -EMPTY_LOGIT), seg)

    def display_images(self, image: torch.Tensor) -> torch.Tensor:
        """Network inputs as 8-bit scans again (the preprocessing's normalisation undone)."""
        img = image * self.preprocess.std + self.preprocess.mean  # [0, 1] again
        return (img.clamp(0, 1) * 255).to(torch.uint8)

    @torch.no_grad()
    def scored_outputs(self, image: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """What validation scores for a batch, without touching the metrics: the class
        probabilities and the mask (gate and post-processing applied, no test-time flip)."""
        out = self(image)
        seg = out["seg"]
        if seg is not None and self.postprocess.active:
            seg = self._postprocessed(seg)
        return {
            "prob": torch.softmax(out["cls"].float(), dim=1) if out["cls"] is not None else None,
            "pred_mask": torch.sigmoid(seg) >= 0.5 if seg is not None else None,
        }

    def _eval_epoch_end(self, split: str) -> None:
        values: dict[str, torch.Tensor] = {}
        key = _key(split)
        if key in self.cls_metrics:
            values.update(self.cls_metrics[key].compute())
            self.cls_metrics[key].reset()
        if key in self.seg_metrics:
            values.update(self.seg_metrics[key].compute())
            self.seg_metrics[key].reset()
        flat = flatten_results(split, values, self.class_names)
        flat[f"{split}/overall"] = overall_score(
            flat.get(f"{split}/cls_f1"), flat.get(f"{split}/seg_dice"), self.task
        )
        self.results[split] = flat
        overall = f"{split}/overall"
        scalars = {
            k: v
            for k, v in flat.items()
            if k != overall and not isinstance(v, list) and not math.isnan(v)
        }
        # the metrics are computed from every rank's images already (torchmetrics gathers them),
        # so syncing averages equal values; it keeps Lightning from warning once per metric
        self.log_dict(scalars, sync_dist=True)
        self.log(overall, flat[overall], prog_bar=True, sync_dist=True)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self.samples = {}

    def test_step(self, batch: dict, batch_idx: int) -> None:
        views = self.views(batch["image"])
        out = self._eval_step(batch, self.eval_split, combine_views(views))
        keep = {"label": batch["label"], "index": batch["index"]}
        if out["cls"] is not None:
            keep["prob"] = torch.softmax(out["cls"].double(), dim=1)
            temperature = getattr(self.net, "temperature", 1.0)
            if temperature != 1.0:  # the same views without the temperature: the figure's "before"
                keep["prob_uncalibrated"] = torch.stack(
                    [torch.softmax(v["cls"].double() * temperature, dim=1) for v in views]
                ).mean(0)
        if out["seg"] is not None:
            tp, fp, fn, _ = confusion_counts(out["seg"], batch["mask"])
            keep.update(tp=tp, gt=tp + fn, pred=tp + fp, dice=dice_iou(tp, fp, fn)[0])
            keep["pred_mask"] = torch.sigmoid(out["seg"]) >= 0.5
            keep["mask"] = batch["mask"] >= 0.5
            # lesions found, missed and invented, per image (medmtl.metrics.lesion_counts); a
            # batch without instance labels: each connected part of the mask is a lesion
            prob = torch.sigmoid(out["seg"].float()).cpu().numpy()
            truth = batch.get("lesions", keep["mask"]).cpu().numpy()
            truth = np.stack([instances(t[0])[None] for t in truth])
            keep["lesions"] = torch.from_numpy(truth)  # for the per-lesion table
            keep["lesion_counts"] = torch.from_numpy(
                np.stack([lesion_counts(t[0], q[0]) for t, q in zip(truth, prob, strict=True)])
            )
            keep["image"] = self.display_images(batch["image"])
        if out.get("unlike_score") is not None:
            keep["unlike_score"] = out["unlike_score"].double()
        # the members' or the mirror's disagreement
        spread = disagreement(
            {k: v.detach().float().cpu().numpy() for k, v in out.items() if k in VIEWS}
        )
        keep.update({k: torch.from_numpy(v).double() for k, v in spread.items()})
        for key, value in keep.items():
            self.samples.setdefault(key, []).append(value.detach().cpu())

    def on_test_epoch_end(self) -> None:
        self.per_image = self._gather_per_image()
        self._eval_epoch_end(self.eval_split)

    def _gather_per_image(self) -> dict[str, torch.Tensor]:
        """The per-image numbers of every rank, one entry per image, in data set order.

        Under DDP each rank saw part of the split (the sampler pads by repeating images), so
        the small per-image tensors are gathered and duplicates dropped by image index.
        """
        wanted = ("index", "label", "prob", "tp", "gt", "pred", "lesion_counts",
                  *UNCERTAINTY_COLUMNS)  # fmt: skip
        keys = [k for k in wanted if k in self.samples]
        local = {k: torch.cat(self.samples[k]) for k in keys}
        if self.trainer is not None and self.trainer.world_size > 1:
            gathered = self.all_gather({k: v.to(self.device) for k, v in local.items()})
            local = {k: v.flatten(0, 1).cpu() for k, v in gathered.items()}
        order = torch.argsort(local["index"], stable=True)
        index = local["index"][order]
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]
        return {k: v[order][first] for k, v in local.items()}

    def describe(self) -> RunRecord:
        """What this run is, for its record (``metrics.json``): data set, size, fold, encoder
        and its weights, λ, the evaluation choices, calibration."""
        hp = self.hparams
        data, model = dict(hp.get("data") or {}), self.net_settings
        net, gate = self.net, self.net.gate
        record = RunRecord(
            data_name=data.get("name"),
            image_size=data.get("image_size"),
            num_folds=data.get("num_folds"),
            cv_folds=cv_folds_of(data),
            fold=fold_of(data),
            progressive_resize=self.progressive.to_dict() or None,
            seed=hp.get("seed"),
            arch=net.arch,
            encoder=net.encoder_name,
            encoder_weights=model.encoder_weights,
            encoder_study=model.encoder_study or net.encoder_name,
            task=self.task,
            norm=model.norm,
            deep_supervision=model.deep_supervision,
            postprocess=self.postprocess.to_dict(),
            weighting=self.criterion.weighting,
            seg_weight=self.criterion.seg_weight,
            presence_weight=self.criterion.presence_weight,
            deep_supervision_weight=self.criterion.deep_supervision_weight,
            tta=self.tta,
            empty_mask_class=(
                None if gate.empty_mask_index is None else self.class_names[gate.empty_mask_index]
            ),
            empty_mask_min_prob=gate.empty_mask_min_prob,
            empty_mask_keep_above=gate.empty_mask_keep_above,
            mask_threshold=gate.mask_threshold,
        )
        out = {f"loss/{k}": v for k, v in self.criterion.task_weights().items()}
        if self.teacher is not None:
            out["distill/teacher"] = self.teacher.source
            out["distill/weight"] = self.teacher.weight
            out["distill/temperature"] = self.teacher.temperature
        if net.task != "seg":  # temperature scaling (1: uncalibrated); an ensemble's members'
            calibration = calibration_record(net)
            for key in ("member_temperatures", "temperature"):
                if key in calibration:
                    out[f"calibration/{key}"] = calibration[key]
        if self.answer_sets is not None:
            out["conformal/alpha"] = self.answer_sets.alpha
            out["conformal/by_class"] = self.answer_sets.by_class
            out["conformal/num_images"] = int(len(self.answer_sets.scores))
        return record.update(out)

    def test_samples(self) -> dict[str, torch.Tensor]:
        """Per-image outputs of the last test run, concatenated (label, prob, dice, image...)."""
        return {k: torch.cat(v) for k, v in self.samples.items()}

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.hparams.optimizer, self.parameters())
        scheduler = self._make_scheduler(optimizer)
        if scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }

    def _make_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """The epoch-wise schedule over this run's ``trainer.max_epochs`` (None: constant lr)."""
        return build_scheduler(self.hparams.scheduler, optimizer, self.trainer.max_epochs or 1)

    # -- resuming ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the random state with the weights, so a resumed run draws the same batches."""
        checkpoint["medmtl_rng"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming: the schedule is rebuilt for this run's length (it may be longer) in
        :meth:`on_train_start`, and the random state is put back there."""
        checkpoint["lr_schedulers"] = []  # nothing for Lightning to load into a new shape
        self._resume_rng = checkpoint.get("medmtl_rng")
        self._resuming = True

    def on_train_start(self) -> None:
        if not self._resuming:
            return
        self._resuming = False
        configs = self.trainer.lr_scheduler_configs
        if configs:
            # a fresh schedule for this run's max_epochs, advanced to the epochs already done
            optimizer = configs[0].scheduler.optimizer
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"]
            scheduler = self._make_scheduler(optimizer)
            with warnings.catch_warnings():  # stepping ahead of optimizer.step() on purpose
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(self.trainer.current_epoch):
                    scheduler.step()
            configs[0].scheduler = scheduler
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
            self._resume_rng = None
        else:
            log.warning(
                "The checkpoint holds no random state (written before medmtl saved it): the "
                "resumed run draws other batches than an uninterrupted one would have."
            )


def _partial(cfg: dict, what: str) -> Any:
    """The factory a ``conf/optimizer`` or ``conf/scheduler`` entry describes (Hydra
    ``_partial_``), built only from plain values, as stored in checkpoints (older checkpoints'
    forms are converted when they are loaded: :func:`medmtl.models.upgrade.upgrade`)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    cfg = dict(cfg)
    if "_target_" not in cfg:
        raise ConfigError(f"{what}: no _target_; choose a file in conf/{what} ({what}=<name>).")
    cfg["_partial_"] = True
    try:
        return instantiate(cfg)
    except InstantiationException as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"{what}: cannot use {cfg['_target_']!r} ({first[:160]}); choose a file in "
            f"conf/{what} ({what}=<name>) or give a class that exists."
        ) from exc


def check_optimization(optimizer: dict, scheduler: dict | None) -> None:
    """Refuse an optimizer or schedule that cannot be built, before any data is read."""
    OptimizerSettings.check(optimizer)
    _partial(optimizer, "optimizer")
    if scheduler:
        _partial(scheduler, "scheduler")


def build_optimizer(cfg: dict, params: Any) -> torch.optim.Optimizer:
    """The optimizer of ``conf/optimizer`` (e.g. ``torch.optim.AdamW``) over ``params``."""
    factory = _partial(cfg, "optimizer")
    try:
        return factory(params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"optimizer: {exc}; check the optimizer.* settings.") from exc


def build_scheduler(cfg: dict | None, optimizer: torch.optim.Optimizer, max_epochs: int) -> Any:
    """The schedule of ``conf/scheduler`` for a run of ``max_epochs`` (None: constant lr).

    medmtl's schedules (:mod:`medmtl.training.schedules`) take ``max_epochs``; any torch
    scheduler whose arguments are all in the config works too.
    """
    if not cfg:
        return None
    factory = _partial(cfg, "scheduler")
    if factory is None:
        return None
    accepts = inspect.signature(factory.func).parameters
    kwargs = {"max_epochs": max(1, int(max_epochs))} if "max_epochs" in accepts else {}
    try:
        return factory(optimizer, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"scheduler: {exc}; check the scheduler.* settings.") from exc


def rng_state() -> dict[str, Any]:
    """torch, numpy and Python random states as plain tensors and lists (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_py = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss_py},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back the states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))

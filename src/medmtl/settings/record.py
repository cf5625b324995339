"""The run record: the typed form of ``metrics.json``.

Every workflow that finishes a run (training, evaluation, an ensemble's evaluation) writes one
:class:`RunRecord` through :func:`medmtl.reporting.summary.write_record`; the tables, ensembles,
calibration and the model card read it back with :func:`read_record`. The file keeps its flat
form (``"data/name"``, ``"loss/seg_weight"``, ``"test/seg_dice"``...), so older runs still read.
Each field names its key in the file once, and where a sweep's command line may say it
instead (``loss.seg_weight=0.7``) the spelling of that override: the record of an older run
that did not write a field falls back to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from medmtl.errors import DataError
from medmtl.settings.evaluation import SPLITS


def _f(key: str, override: str | None = None, *, optional: bool = False) -> Any:
    """A field stored under ``key``; ``override``: its command-line spelling in a sweep;
    ``optional``: left out of the file when unset (its presence says what the run was)."""
    meta = {"key": key, "override": override, "optional": optional}
    return field(default=None, metadata=meta)


@dataclass
class RunRecord:
    """What ran (data, fold, model, encoder weights, seed, λ, evaluation choices), what it cost
    and what it measured (``values``: ``<split>/<metric>`` and every other number)."""

    # the data
    data_name: str | None = _f("data/name", "data")
    image_size: int | None = _f("data/image_size", "data.image_size")
    num_folds: int | None = _f("data/num_folds", "data.num_folds")
    fold: int | None = _f("data/fold", "data.fold")
    # cross-validation (data.split.folds): the run's test side is its fold of these
    cv_folds: int | None = _f("data/cv_folds", "data.split.folds", optional=True)
    progressive_resize: dict | None = _f("data/progressive_resize")
    seed: int | None = _f("seed", "seed")
    # the model
    arch: str | None = _f("model/arch", "model/arch")
    encoder: str | None = _f("model/encoder", "model/encoder")
    encoder_weights: str | None = _f("model/encoder_weights", "model.encoder_weights")
    encoder_study: str | None = _f("model/encoder_study", "model/encoder")
    task: str | None = _f("model/task", "model.task")
    norm: str | None = _f("model/norm", "model.norm")
    deep_supervision: bool | None = _f("model/deep_supervision", "model.deep_supervision")
    postprocess: dict | None = _f("model/postprocess")
    # the loss
    weighting: str | None = _f("loss/weighting", "loss.weighting")
    seg_weight: float | None = _f("loss/seg_weight", "loss.seg_weight")
    presence_weight: float | None = _f("loss/presence_weight", "loss.presence_weight")
    deep_supervision_weight: float | None = _f(
        "loss/deep_supervision_weight", "loss.deep_supervision_weight"
    )
    # how it was evaluated
    tta: bool | None = _f("tta", "tta")
    empty_mask_class: str | None = _f("empty_mask_class", "model.empty_mask_class")
    empty_mask_min_prob: float | None = _f("empty_mask_min_prob", "model.empty_mask_min_prob")
    empty_mask_keep_above: float | None = _f("empty_mask_keep_above", "model.empty_mask_keep_above")
    mask_threshold: float | None = _f("mask_threshold", "model.mask_threshold")
    eval_split: str | None = _f("eval/split", optional=True)
    adapt: str | None = _f("adapt", optional=True)
    num_images: int | None = _f("num_images", optional=True)
    # what it cost (training)
    epochs: int | None = _f("epochs", optional=True)
    global_step: int | None = _f("global_step", optional=True)
    wall_time_s: float | None = _f("wall_time_s", optional=True)
    peak_rss_mb: float | None = _f("peak_rss_mb", optional=True)
    peak_rss_children_mb: float | None = _f("peak_rss_children_mb", optional=True)
    precision: str | None = _f("trainer/precision", "trainer.precision", optional=True)
    precision_reason: str | None = _f("trainer/precision_reason", optional=True)
    world_size: int | None = _f("trainer/world_size", optional=True)
    cluster_environment: str | None = _f("trainer/cluster_environment", optional=True)
    # its files
    best_ckpt: str | None = _f("best_ckpt", optional=True)
    # an evaluation's model: the checkpoint (or folder) evaluated and the run it belongs to
    ckpt_path: str | None = _f("ckpt_path", optional=True)
    run_dir: str | None = _f("run", optional=True)
    resumed_from: str | None = _f("resumed_from", optional=True)
    init_from: str | None = _f("init_from", "init_from", optional=True)
    export: str | None = _f("export", optional=True)
    # an ensemble
    members: list[str] | None = _f("ensemble/members", optional=True)
    ensemble_size: int | None = _f("ensemble/size", optional=True)
    member_folds: list | None = _f("ensemble/folds", optional=True)
    member_seeds: list | None = _f("ensemble/seeds", optional=True)
    member_overrides: dict | None = _f("ensemble/overrides", optional=True)
    ensemble_tta: bool | None = _f("ensemble/tta", optional=True)
    ensemble_gate: str | None = _f("ensemble/gate", optional=True)
    # every other entry: a measured value of one of VALUE_FAMILIES (<split>/<metric>, ...)
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def is_ensemble(self) -> bool:
        """An ensemble's evaluation (medmtl-ensemble, or a sweep's after-sweep ensemble)."""
        return self.members is not None or self.ensemble_size is not None

    @property
    def split(self) -> str:
        """The split the metrics are of: ``test``, or what an evaluation chose (``all``...)."""
        return self.eval_split or "test"

    def metric(self, key: str) -> Any:
        """An entry by its key in the file (a field's or one of ``values``); ``test/<metric>``
        reads the split the record was evaluated on."""
        if key.startswith("test/"):
            key = f"{self.split}/{key.removeprefix('test/')}"
        name = KEY_FIELDS.get(key)
        return getattr(self, name) if name else self.values.get(key)

    def setting(self, name: str, overrides: dict[str, str] | None = None) -> Any:
        """The field ``name``; if the run did not record it, its command-line override."""
        value = getattr(self, name)
        spelling = FIELD_META[name]["override"]
        if value is None and overrides and spelling:
            return overrides.get(spelling)
        return value

    def update(self, entries: dict[str, Any], *, known_only: bool = True) -> RunRecord:
        """Set entries by their keys in the file (fields by their key, the rest into
        ``values``); returns the record. A key that is neither a field's nor of one of
        :data:`VALUE_FAMILIES` is refused (``known_only=False``: kept, for reading files
        written by other versions)."""
        for key, value in entries.items():
            name = KEY_FIELDS.get(key)
            if name:
                setattr(self, name, value)
            elif not known_only or key.split("/", 1)[0] in VALUE_FAMILIES and "/" in key:
                self.values[key] = value
            else:
                raise ValueError(
                    f"run record: {key!r} is neither a field of RunRecord nor of a value family "
                    f"({', '.join(VALUE_FAMILIES)}); add a field or a family in "
                    "medmtl.settings.record."
                )
        return self

    def to_metrics(self, sparse: bool = False) -> dict[str, Any]:
        """The flat ``metrics.json`` form (``sparse``: only the entries that are set)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "values":
                continue
            value = getattr(self, f.name)
            if value is not None or not (sparse or f.metadata["optional"]):
                out[f.metadata["key"]] = value
        out.update(self.values)
        return out

    def merge(self, other: RunRecord | dict[str, Any] | None) -> RunRecord:
        """Set what ``other`` (a record, or entries by key) has set; returns the record."""
        if isinstance(other, RunRecord):  # its entries were accepted (or read) already
            return self.update(other.to_metrics(sparse=True), known_only=False)
        return self.update(other or {})

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> RunRecord:
        """The record of a ``metrics.json``'s content (entries of other versions kept)."""
        return cls().update(metrics, known_only=False)


# the measured values a record holds (``values``), by the first part of their key: the metrics
# of each split, then calibration, conformal sets, unlike-training score, the shift test's
# reference and measurements, loss weights, the evaluation's own choices, the W&B run,
# distillation and the ensemble's gate
VALUE_FAMILIES = (
    *SPLITS,
    "calibration", "conformal", "unlike", "shift", "loss", "eval", "wandb", "distill", "gate",
    "refer",
)  # fmt: skip
FIELD_META = {f.name: f.metadata for f in fields(RunRecord) if f.name != "values"}
KEY_FIELDS = {meta["key"]: name for name, meta in FIELD_META.items()}


def read_record(path: str | Path) -> RunRecord:
    """The record in ``path`` (a ``metrics.json``), or one DataError line naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable {path.name} ({exc}).") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a readable {path.name} (not a JSON object).")
    return RunRecord.from_metrics(data)


def evaluated_tta(ckpt_path: str | Path) -> bool:
    """The test-time flip the run of a checkpoint was evaluated with, and its temperature and
    answer sets fitted with: its run's ``metrics.json`` (``<run>/checkpoints/<x>.ckpt``, or a
    model artifact's folder holding both); False where there is none."""
    folder = Path(ckpt_path).resolve().parent
    record = folder / "metrics.json"
    if folder.name == "checkpoints":
        record = folder.parent / "metrics.json"
    return bool(read_record(record).tta) if record.is_file() else False

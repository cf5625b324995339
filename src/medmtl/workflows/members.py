"""The models the commands evaluate: a checkpoint, a run folder, an ensemble folder (the
``out=`` of medmtl-ensemble or ``<sweep>/ensemble``) or a sweep folder (its fold models as
their ensemble), each opened as one :class:`MultiTaskModule`."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmtl.data.splits import cv_folds_of, fold_of
from medmtl.errors import ConfigError, DataError, summarize
from medmtl.inference.core import ARTIFACT_CKPT
from medmtl.models.checkpoint import checkpoint_not_found
from medmtl.models.conformal import AnswerSets
from medmtl.models.ensemble import EnsembleNet
from medmtl.reporting.runs import collect_runs, pooled, read_overrides
from medmtl.settings.data import keys as data_keys
from medmtl.settings.evaluation import AS_TRAINED, GATE_KEYS
from medmtl.settings.record import RunRecord, evaluated_tta, read_record
from medmtl.training.module import MultiTaskModule

log = logging.getLogger(__name__)
# data settings that decide what a member sees at evaluation: preprocessing, classes and their
# labels, split (augmentation, sampling, batch sizes, the member's fold and where the data lies
# may differ); marked member=True in the schema
EVAL_DATA_KEYS = data_keys(member=True)


def best_checkpoint(run: Path) -> Path:
    """The run's best checkpoint (named in metrics.json), found in the run's own folder."""
    m = run / "metrics.json"
    best = read_record(m).best_ckpt if m.exists() else None
    if best:
        local = run / "checkpoints" / Path(best).name  # the folder may have moved
        if local.is_file():
            return local
        if Path(best).is_file():
            return Path(best)
    found = sorted((run / "checkpoints").glob("epoch*.ckpt"))
    if len(found) == 1:
        return found[0]
    raise DataError(
        f"{run}: no best checkpoint found (metrics.json names {best!r}); give a finished "
        "medmtl-train run folder."
    )


def find_members(paths: Sequence[str | Path], select: dict[str, str] | None = None) -> list[Path]:
    """Run folders from the arguments: run folders, or sweep folders holding them.

    ``select`` keeps the sweep's jobs whose command line set these values (e.g.
    ``{"loss.seg_weight": "0.7"}``: the fold models of one row). A selected job that failed or
    did not finish is refused with its reason: an ensemble never silently has fewer members.
    """
    if not paths:
        raise ConfigError("give one or more run folders or a sweep folder.")
    select = select or {}
    runs: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise ConfigError(f"{p}: folder not found; give run folders or a sweep folder.")
        if (p / "checkpoints").is_dir():
            runs.append(p)
            continue
        found = [
            r
            for r in collect_runs(p)
            if not r.is_ensemble and all(r.overrides.get(k) == v for k, v in select.items())
        ]
        if not found:
            raise ConfigError(f"{p}: no run matches select={select}.")
        bad = [r.reason for r in found if r.status != "ok"]
        if bad:
            raise DataError(
                f"{p}: {len(bad)} run(s) did not finish ({summarize(bad)}); "
                "give the finished run folders one by one to ensemble without them."
            )
        runs += [r.path for r in found]
    if len(set(runs)) != len(runs):
        raise ConfigError("a run folder was given twice.")
    return runs


def shared_overrides(runs: Sequence[Path]) -> dict[str, str]:
    """The command-line settings all members share, seeds and folds aside (the table row)."""
    per_run = [read_overrides(r) for r in runs]
    keys = {k for k in set.intersection(*(set(o) for o in per_run)) if not pooled(k)}
    return {k: per_run[0][k] for k in sorted(keys) if len({o[k] for o in per_run}) == 1}


def common_data(members: list[tuple[Path, dict]]) -> dict:
    """The members' shared data settings; refuse members that would see other images."""
    first_path, first = members[0]
    for path, hp in members[1:]:
        diff = [k for k in EVAL_DATA_KEYS if hp["data"].get(k) != first["data"].get(k)]
        if diff:
            raise ConfigError(
                f"{path}: trained with other data settings than {first_path} ({', '.join(diff)}); "
                "an ensemble needs members with the same preprocessing, classes and split."
            )
        if hp["class_names"] != first["class_names"]:
            raise ConfigError(f"{path}: other classes than {first_path}.")
    folds = cv_folds_of(first["data"])
    if folds and len(members) > 1:
        raise ConfigError(
            f"{first_path}: the members are folds of a cross-validation (data.split.folds="
            f"{folds}): each image was trained on by some of them, so an ensemble of them has no "
            "unseen test image. Pool their own tests instead: medmtl-tables <sweep>."
        )
    return dict(first["data"], num_folds=None, fold=0)


@dataclass
class OpenedModel:
    """A model ready to test: the module, the data settings it was trained with and what it is
    (for ``metrics.json``)."""

    module: MultiTaskModule
    data: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)
    tta: bool = False  # the test-time flip its own evaluation used
    members: list[Path] = field(default_factory=list)  # ensemble members (run folders)


def build_ensemble(
    runs: Sequence[Path], empty_mask_class: str | None = "as_trained"
) -> tuple[MultiTaskModule, dict[str, Any], list[dict]]:
    """The runs' best checkpoints averaged as one module (the first member's head and gate
    unless ``empty_mask_class`` says otherwise), their shared data settings and each member's
    hyper-parameters."""
    loaded = []
    for run in runs:
        module, ckpt = MultiTaskModule.from_checkpoint(best_checkpoint(run))
        loaded.append((run, module, ckpt["hyper_parameters"]))
    data = common_data([(r, hp) for r, _, hp in loaded])
    head: MultiTaskModule = loaded[0][1]
    gate = head.net.gate.empty_mask_index
    if empty_mask_class != "as_trained":
        names = list(head.class_names)
        if empty_mask_class is not None and empty_mask_class not in names:
            raise ConfigError(
                f"empty_mask_class={empty_mask_class!r} is not a class of the members "
                f"({', '.join(names)}); use one of them, null or as_trained."
            )
        gate = None if empty_mask_class is None else names.index(empty_mask_class)
    head.net = EnsembleNet([m.net for _, m, _ in loaded], empty_mask_index=gate)
    head.eval()
    return head, data, [hp for _, _, hp in loaded]


def _ensemble_members(folder: Path, record: RunRecord) -> list[Path]:
    """An ensemble folder's members, found where they were or beside it (a moved sweep)."""
    out = []
    for m in record.members or []:
        here = Path(m)
        moved = folder.parent / here.name
        if (here / "checkpoints").is_dir():
            out.append(here)
        elif (moved / "checkpoints").is_dir():
            out.append(moved)
        else:
            raise DataError(
                f"{folder}/metrics.json: ensemble member {m} not found (nor {moved}); the "
                "ensemble needs its members' run folders."
            )
    return out


def read_json(path: Path) -> dict:
    """A JSON file beside a run's record (conformal.json, calibration.json), or one DataError
    line."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable {path.name} ({exc}).") from exc


MODEL_PATHS = "a checkpoint (.ckpt), a run folder, an ensemble folder or a sweep folder"


def check_model_path(path: str | Path) -> Path:
    """``path`` if it can name a model for :func:`open_model` (it exists; not an ONNX export),
    else one line; nothing is opened, so a command checks it before any work."""
    p = Path(str(path)).expanduser()
    if p.suffix == ".onnx":
        raise ConfigError(
            f"{p}: an exported ONNX model; this command evaluates PyTorch models: give "
            f"{MODEL_PATHS} it was exported from (medmtl-predict runs ONNX models)."
        )
    if p.suffix == ".ckpt" and not p.is_file():
        raise checkpoint_not_found(p)
    if not p.exists():
        raise ConfigError(f"{p}: not found; give {MODEL_PATHS}.")
    return p


def check_reads_like(opened: OpenedModel, data: Mapping[str, Any], option: str) -> None:
    """Refuse, naming ``option``, a model that reads images otherwise than ``data`` says
    (conversion, CLAHE, size, normalisation): a distillation teacher, the start of a
    fine-tuning."""
    from medmtl.preprocess.pipeline import PreprocessSettings

    theirs = PreprocessSettings.from_dict(opened.data).to_dict()
    ours = PreprocessSettings.from_dict(dict(data)).to_dict()
    differ = [k for k, v in ours.items() if theirs.get(k) != v]
    if differ:
        raise ConfigError(
            f"{option}: it reads images otherwise than this run ({', '.join(differ)} differ); "
            "train with its data settings."
        )


def check_classes(opened: OpenedModel, classes: Sequence[str], option: str) -> None:
    """Refuse, naming ``option``, a model that knows other ``classes`` than this run."""
    if list(opened.module.class_names) != list(classes):
        raise ConfigError(
            f"{option}: its classes {list(opened.module.class_names)} are not this run's "
            f"{list(classes)}."
        )


def open_model(path: str | Path) -> OpenedModel:
    """Open a checkpoint, a run folder, an ensemble folder or a sweep folder as one model.

    An ensemble folder keeps the gate, its thresholds and the test-time flip it was evaluated
    with (its metrics.json); a sweep folder is the ensemble of its finished jobs (ensembles
    inside it aside), with the settings of ``<sweep>/ensemble`` where that exists.
    """
    p = check_model_path(path)
    if p.is_file() or p.suffix == ".ckpt":
        module, ckpt = MultiTaskModule.from_checkpoint(p)
        tta = evaluated_tta(p)
        return OpenedModel(module, ckpt["hyper_parameters"]["data"], {"ckpt_path": str(p)}, tta)
    if (p / ARTIFACT_CKPT).is_file() and not (p / "checkpoints").is_dir():
        # a model artifact's folder (logger.wandb.log_model): the checkpoint and its metrics
        module, ckpt = MultiTaskModule.from_checkpoint(p / ARTIFACT_CKPT)
        own = read_record(p / "metrics.json") if (p / "metrics.json").is_file() else RunRecord()
        record = {"ckpt_path": str(p / ARTIFACT_CKPT)}
        return OpenedModel(module, ckpt["hyper_parameters"]["data"], record, bool(own.tta))
    if (p / "checkpoints").is_dir():
        opened = open_model(best_checkpoint(p))
        opened.record["run"] = str(p)
        return opened
    here = read_record(p / "metrics.json") if (p / "metrics.json").is_file() else RunRecord()
    if here.members is not None:
        runs, own, folder = _ensemble_members(p, here), here, p
    else:
        runs, folder = find_members([p]), p / "ensemble"
        # the sweep's own ensemble (EnsembleAfterSweep), if any: its flip and gate settings
        inside = folder / "metrics.json"
        own = read_record(inside) if inside.is_file() else RunRecord()
    gate = own.empty_mask_class if own.is_ensemble else AS_TRAINED
    module, data, hps = build_ensemble(runs, gate)
    # the gate thresholds it was evaluated with, and its conformal answer sets (medmtl-ensemble
    # writes them beside its metrics.json)
    sets, calibration = folder / "conformal.json", folder / "calibration.json"
    module.configure_evaluation(
        gate={k: getattr(own, k) for k in GATE_KEYS if own.is_ensemble},
        answer_sets=AnswerSets.from_dict(read_json(sets)) if sets.is_file() else None,
    )
    if calibration.is_file():  # the ensemble's own temperature, fitted on unseen images
        module.net.set_temperature(read_json(calibration)["calibration/temperature"])
    if (folder / "refer.json").is_file():  # where its members' masks disagree too much
        module.net.min_mask_agreement = read_json(folder / "refer.json")["refer/min_mask_agreement"]
    record = RunRecord(
        members=[str(r) for r in runs],
        ensemble_size=len(runs),
        member_folds=[fold_of(hp["data"]) for hp in hps],
        member_seeds=[hp.get("seed") for hp in hps],
    ).to_metrics(sparse=True)
    return OpenedModel(module, data, {"ckpt_path": str(p), **record}, bool(own.ensemble_tta), runs)

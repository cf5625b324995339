"""medmtl-ensemble: several runs (typically the k fold models) evaluated and exported as one model."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.experimental.callback import Callback

from medmtl.errors import ConfigError, DataError, summarize
from medmtl.inference.card import card_from_metrics
from medmtl.io.files import ensure_output_dir
from medmtl.models.ensemble import EnsembleNet
from medmtl.preprocess.pipeline import PreprocessSettings
from medmtl.reporting.tables import POOLED, _overrides, collect_runs
from medmtl.training.module import MultiTaskModule
from medmtl.workflows.evaluate import test_module
from medmtl.workflows.logs import quiet_third_party

log = logging.getLogger(__name__)
# data settings that decide what a member sees at evaluation: preprocessing, classes and their
# labels, split (augmentation, sampling, batch sizes, the member's fold and where the data lies
# may differ)
EVAL_DATA_KEYS = (
    "name",
    "source",
    "classes",
    "mask_optional_classes",
    "class_map",
    "columns",
    "busbra",
    "leave_out",
    "image_size",
    "conversion",
    "clahe",
    "clahe_clip_limit",
    "clahe_tile_grid",
    "split_file",
    "split",
    "dedup",
    "subset",
)


def best_checkpoint(run: Path) -> Path:
    """The run's best checkpoint (named in metrics.json), found in the run's own folder."""
    m = run / "metrics.json"
    best = None
    if m.exists():
        try:
            best = json.loads(m.read_text()).get("best_ckpt")
        except ValueError as exc:
            raise DataError(f"{m}: corrupt metrics.json ({exc}).") from exc
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
            if "ensemble/size" not in r.metrics
            and all(r.overrides.get(k) == v for k, v in select.items())
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
    per_run = [_overrides(r) for r in runs]
    keys = set.intersection(*(set(o) for o in per_run)) - POOLED
    return {k: per_run[0][k] for k in sorted(keys) if len({o[k] for o in per_run}) == 1}


def _common_data(members: list[tuple[Path, dict]]) -> dict:
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
    return dict(first["data"], num_folds=None, fold=0)


def ensemble(
    paths: Sequence[str | Path],
    out: str | Path,
    split: str = "test",
    export: str | Path | None = None,
    data_overrides: dict[str, Any] | None = None,
    empty_mask_class: str | None = "as_trained",
    channels_last: bool = True,
    select: dict[str, str] | None = None,
    tta: bool = False,
) -> dict[str, Any]:
    """Average the members on ``split`` and evaluate like a single run; optionally export ONNX.

    ``tta`` adds each member's horizontal mirror image to the average (test-time flip).
    """
    quiet_third_party()
    out = Path(out)
    if (out / "metrics.json").exists():
        raise ConfigError(f"{out}: already holds results (metrics.json); choose a new out=.")
    runs = find_members(paths, select)
    ensure_output_dir(out, "out")
    loaded = []
    for run in runs:
        module, ckpt = MultiTaskModule.from_checkpoint(best_checkpoint(run))
        loaded.append((run, module, ckpt["hyper_parameters"]))
    data = _common_data([(r, hp) for r, _, hp in loaded])
    data.update(data_overrides or {})
    if split == "val" and any(hp["data"].get("num_folds") for _, _, hp in loaded):
        log.warning(
            "k-fold members were validated on different folds; split=val uses the fixed split's "
            "validation images, which some members trained on. Use split=test."
        )
    head: MultiTaskModule = loaded[0][1]
    gate = head.net.empty_mask_index
    if empty_mask_class != "as_trained":
        gate = None if empty_mask_class is None else list(head.class_names).index(empty_mask_class)
    head.net = EnsembleNet([m.net for _, m, _ in loaded], empty_mask_index=gate)
    head.use_channels_last(channels_last)
    head.tta = tta
    head.eval()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(out),
    )
    members = [str(r) for r in runs]
    extra = {
        "ensemble/members": members,
        "ensemble/size": len(members),
        "ensemble/folds": [
            hp["data"].get("fold") if hp["data"].get("num_folds") else None for _, _, hp in loaded
        ],
        "ensemble/seeds": [hp.get("seed") for _, _, hp in loaded],
        "ensemble/overrides": shared_overrides(runs),
        "ensemble/tta": tta,
    }
    metrics = test_module(head, data, split, trainer, out, extra)
    if export:
        from medmtl.inference.export import export_network

        settings = PreprocessSettings.from_dict(data)
        model = {
            "arch": head.net.arch,
            "encoder": head.net.encoder_name,
            "in_channels": int(loaded[0][2]["model"].get("in_channels", 1)),
            "ensemble_size": len(members),
        }
        export_network(
            head.net,
            settings,
            list(head.class_names),
            head.task,
            model,
            export,
            extra={
                "ensemble_members": [Path(m).name for m in members],
                "postprocess": head.postprocess.to_dict(),
                "card": card_from_metrics(metrics, str(out / "metrics.json")),
            },
        )
        log.info("Exported the ensemble to %s", export)
        metrics["export"] = str(export)
    return metrics


def run_ensemble_cli(args: Sequence[str], options: dict[str, Any]) -> int:
    """Entry point body for ``medmtl-ensemble``: returns the exit status."""
    data = {"root": options["data_root"]} if options.get("data_root") else None
    select = {}
    for cond in options.get("select") or []:
        key, sep, value = str(cond).partition("=")
        if not sep:
            raise ConfigError(
                f"select={cond}: expected select=<key>=<value>, e.g. loss.seg_weight=0.7."
            )
        select[key.lstrip("+")] = value
    ensemble(
        args,
        options["out"],
        options["split"],
        options["export"],
        data,
        options["empty_mask_class"],
        select=select,
        tta=bool(options.get("tta")),
    )
    return 0


class EnsembleAfterSweep(Callback):
    """Hydra callback: when a sweep over folds (or seeds) of one setting ends, ensemble it.

    Set in a config as ``hydra.callbacks.ensemble._target_:
    medmtl.workflows.ensemble.EnsembleAfterSweep``. The members are the sweep's jobs; the
    ensemble is evaluated on the test split into ``<sweep>/<out>`` with the sweep's ``tta``
    setting and the members' post-processing and gate. A sweep whose jobs differ in anything
    else than ``seed``/``data.fold`` (several table rows), or with a failed job, is left alone
    with a message naming the medmtl-ensemble command.
    """

    def __init__(self, out: str = "ensemble", split: str = "test") -> None:
        self.out = out
        self.split = split

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        """Ensemble the finished sweep (Hydra calls this once, after the last job)."""
        sweep = Path(str(config.hydra.sweep.dir))
        command = f"medmtl-ensemble {sweep} out={sweep / self.out}"
        runs = [r for r in collect_runs(sweep) if "ensemble/size" not in r.metrics]
        if len(runs) < 2:
            return
        bad = [r.reason for r in runs if r.status != "ok"]
        keys = {k for r in runs for k in r.overrides} - POOLED
        mixed = sorted(keys - set(shared_overrides([r.path for r in runs])))
        if bad or mixed:
            why = f"{len(bad)} job(s) did not finish" if bad else f"the jobs differ in {mixed}"
            log.warning("Not ensembling %s: %s. Ensemble by hand: %s", sweep, why, command)
            return
        metrics = ensemble(
            [r.path for r in runs],
            sweep / self.out,
            self.split,
            tta=bool(config.get("tta", False)),
            channels_last=bool(config.get("channels_last", True)),
        )
        log.info(
            "Ensemble of %d runs in %s: %s",
            len(runs),
            sweep / self.out,
            {k: v for k, v in metrics.items() if k.startswith(f"{self.split}/")},
        )

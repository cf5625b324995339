"""medmtl-ensemble: several runs (typically the k fold models) evaluated and exported as one model."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from medmtl.data.build import datamodule_from_config
from medmtl.data.splits import fold_of
from medmtl.errors import ConfigError, open_fraction
from medmtl.inference.card import card_from_metrics
from medmtl.io.files import ensure_output_dir
from medmtl.metrics import mask_agreement
from medmtl.models.calibration import fit_temperature, scaled_probabilities
from medmtl.models.checkpoint import stored_net
from medmtl.models.conformal import AnswerSets, fit_calibration
from medmtl.models.ensemble import combine_views
from medmtl.preprocess.pipeline import PreprocessSettings
from medmtl.reporting.evaluation import gate_tradeoff_figure
from medmtl.reporting.figures import save_figure
from medmtl.reporting.runs import collect_runs, pooled
from medmtl.reporting.summary import write_json
from medmtl.settings.commands import EnsembleSettings
from medmtl.settings.evaluation import GATE_KEYS
from medmtl.settings.record import RunRecord
from medmtl.settings.train import ALPHA, TrainSettings, check_alpha
from medmtl.workflows.evaluate import class_mapping, test_module
from medmtl.workflows.gate import gate_evidence, tune_gate
from medmtl.workflows.logs import quiet_third_party
from medmtl.workflows.members import build_ensemble, find_members, shared_overrides
from medmtl.workflows.wandb_runs import (
    code_version,
    option_request,
    recorded_identity,
    sweep_group,
    wandb_request,
)

log = logging.getLogger(__name__)
# refer an image whose members agree about its mask less than on this share of the out-of-fold
# validation images. The members trained on most of those images (all folds but one), so they
# agree more there than on new images: more than this share of new images is referred, the
# safe side for a screening aid
REFER_AGREEMENT_QUANTILE = 0.05


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
    gate: str | Mapping[str, Any] = "as_trained",
    adapt: str = "none",
    conformal_alpha: float | None = ALPHA,
    conformal_by_class: bool = False,
    wandb: dict[str, Any] | None = None,
    target_sensitivity: float | None = None,
    calibration_data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Average the members on ``split`` and evaluate like a single run; optionally export ONNX.

    ``tta`` adds each member's horizontal mirror image to the average (test-time flip).
    ``adapt="bn"`` re-estimates each member's batch-norm statistics on the evaluated images.
    ``gate="tune"`` chooses the gate's thresholds on the members' out-of-fold validation
    predictions first (:mod:`medmtl.workflows.gate`; written to ``gate.json``), for the best
    all-image Dice or, with ``target_sensitivity``, for the fewest normal false positives at
    that out-of-fold lesion sensitivity (``figures/gate_tradeoff.png``). The conformal
    answer sets (error rate ``conformal_alpha``; None: none) are calibrated on the same
    out-of-fold predictions of k-fold members (written to ``conformal.json``). ``wandb``
    (:func:`medmtl.workflows.wandb_runs.wandb_request`) logs the ensemble's evaluation as a W&B
    run (job_type ensemble) in its members' group. ``calibration_data`` (a data config): fit
    the ensemble's temperature and answer sets on its validation split instead (a new site's
    held-back cases, :mod:`medmtl.workflows.adapt`). ``gate`` may also be the thresholds
    themselves (:data:`GATE_KEYS`): an adapted ensemble keeps its source's.
    """
    given_gate = dict(gate) if isinstance(gate, Mapping) else None
    if given_gate is not None:
        unknown = sorted(set(given_gate) - set(GATE_KEYS))
        if unknown:
            raise ConfigError(f"gate: unknown key(s) {', '.join(unknown)}; known: "
                              f"{', '.join(GATE_KEYS)}.")  # fmt: skip
        gate = "given"
    elif gate not in ("as_trained", "tune"):
        raise ConfigError(f"gate={gate}: choose as_trained or tune.")
    if target_sensitivity is not None:
        target_sensitivity = open_fraction(
            target_sensitivity, "target_sensitivity", "a lesion sensitivity", 0.95
        )
        if gate != "tune":
            raise ConfigError(
                f"target_sensitivity={target_sensitivity} chooses the gate on out-of-fold "
                "predictions; add gate=tune."
            )
    quiet_third_party()
    out = Path(out)
    if (out / "metrics.json").exists():
        raise ConfigError(f"{out}: already holds results (metrics.json); choose a new out=.")
    runs = find_members(paths, select)
    head, data, hps = build_ensemble(runs, empty_mask_class)
    data.update(data_overrides or {})
    ensure_output_dir(out, "out")
    if split == "val" and any(hp["data"].get("num_folds") for hp in hps):
        log.warning(
            "k-fold members were validated on different folds; split=val uses the fixed split's "
            "validation images, which some members trained on. Use split=test."
        )
    head.use_channels_last(channels_last)
    head.configure_evaluation(tta=tta)
    if conformal_alpha is not None:
        conformal_alpha = check_alpha(conformal_alpha)
    folds = [fold_of(hp["data"]) for hp in hps]
    # k-fold members of distinct folds: each validation image predicted by the member that
    # never trained on it; members of one fixed split: the ensemble itself on that split
    out_of_fold = None not in folds and len(set(folds)) == len(folds)
    shared_val = all(f is None for f in folds)
    # the ensemble's temperature and answer sets are fitted on images no member trained on
    on_site = calibration_data is not None and head.task != "seg"
    calibrate = head.task != "seg" and (out_of_fold or shared_val) and not on_site
    wants_sets = conformal_alpha is not None and head.task != "seg" and not on_site
    if wants_sets and not calibrate:
        log.warning(
            "No conformal answer sets: the members are neither k-fold models of distinct folds "
            "nor models of one fixed split, so no validation images are unseen by all of them."
        )
        wants_sets = False
    # the members' mask agreement on images none of them trained on (each fold's held-out
    # images, or the shared validation split): where refer sets in
    agreement = (out_of_fold or shared_val) and head.task == "multitask" and len(runs) > 1
    evidence = None
    if gate == "tune" or (calibrate and out_of_fold) or (agreement and out_of_fold):
        evidence = gate_evidence(runs, tta, channels_last, for_gate=gate == "tune",
                                 ensemble_net=head.net if agreement and out_of_fold else None)  # fmt: skip
    shared = _shared_validation(head, data) if shared_val and (wants_sets or agreement) else None
    extra_refer: dict[str, Any] = {}
    if agreement:
        agree, agree_on = (
            (evidence.mask_agreement, "out-of-fold validation")
            if out_of_fold
            else (shared["agreement"], "shared validation")
        )
    if agreement and not len(agree):
        log.warning("No mask-agreement refer rule: the members have no validation images.")
    elif agreement:
        head.net.min_mask_agreement = float(np.quantile(agree, REFER_AGREEMENT_QUANTILE))
        extra_refer = {"refer/min_mask_agreement": head.net.min_mask_agreement,
                       "refer/quantile": REFER_AGREEMENT_QUANTILE,
                       "refer/num_images": int(len(agree)),
                       "refer/fitted_on": agree_on}  # fmt: skip
        write_json(out / "refer.json", extra_refer)
        log.info(
            "Refer when the members' masks agree less than %.4f (the %g quantile of their "
            "agreement on %d %s images)", head.net.min_mask_agreement,
            REFER_AGREEMENT_QUANTILE, len(agree), agree_on,
        )  # fmt: skip
    extra_cal: dict[str, Any] = {}
    if calibrate and out_of_fold:
        # k-fold members: the ensemble's own temperature on their out-of-fold probabilities
        # (members of one split were each calibrated on that split's validation images)
        prob, label, where = evidence.prob, evidence.label, "out-of-fold validation"
        logits = np.log(np.clip(prob, 1e-7, 1.0))
        temperature = fit_temperature(logits, label)
        head.net.set_temperature(temperature)
        prob = scaled_probabilities(logits, temperature)
        extra_cal = {"calibration/temperature": temperature, "calibration/fitted_on": where,
                     "calibration/num_images": int(len(label))}  # fmt: skip
        write_json(out / "calibration.json", extra_cal)
        log.info("Ensemble temperature %.4f fitted on %d %s images", temperature, len(label), where)
    if wants_sets:
        if not out_of_fold:
            prob, label, where = shared["prob"], shared["label"], "shared validation"
        head.configure_evaluation(
            answer_sets=AnswerSets.fit(prob, label, conformal_alpha, conformal_by_class)
        )
        write_json(out / "conformal.json", head.answer_sets.to_dict())
        log.info(
            "Conformal answer sets calibrated on %d %s images (alpha %s)",
            len(label),
            where,
            conformal_alpha,
        )
    if on_site:
        extra_cal = _calibrate_on(head, calibration_data, conformal_alpha, conformal_by_class, out)
    tuned = None
    if given_gate is not None:
        head.configure_evaluation(gate=given_gate)
    if gate == "tune":
        tuned = tune_gate(evidence, target_sensitivity)
        head.configure_evaluation(gate={k: tuned[k] for k in GATE_KEYS})
        write_json(out / "gate.json", tuned)
        save_figure(gate_tradeoff_figure(tuned), out / "figures" / "gate_tradeoff.png")
        log.info(
            "Gate chosen on %d out-of-fold validation images: P(normal) >= %s, keep a mask whose "
            "maximum reaches %s, mask threshold %s (all-image Dice %.4f; the plain gate's %.4f)",
            tuned["num_images"],
            tuned["empty_mask_min_prob"],
            tuned["empty_mask_keep_above"],
            tuned["mask_threshold"],
            tuned["chosen"]["seg_dice"],
            tuned["plain"]["seg_dice"],
        )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(out),
    )
    members = [str(r) for r in runs]
    extra = RunRecord(
        members=members,
        ensemble_size=len(members),
        member_folds=folds,
        member_seeds=[hp.get("seed") for hp in hps],
        member_overrides=shared_overrides(runs),
        ensemble_tta=tta,
        ensemble_gate=gate,
    )
    extra.update(extra_cal)
    extra.update(extra_refer)
    if tuned is not None:
        extra.update(
            {
                "gate/oof_images": tuned["num_images"],
                "gate/oof_seg_dice": tuned["chosen"]["seg_dice"],
                "gate/oof_seg_dice_plain": tuned["plain"]["seg_dice"],
                "gate/oof_empty_lesion_rate": tuned["chosen"]["empty_lesion_rate"],
                "gate/oof_empty_lesion_rate_plain": tuned["plain"]["empty_lesion_rate"],
                "gate/oof_normal_fp_rate": tuned["chosen"]["normal_fp_rate"],
                "gate/oof_normal_fp_rate_plain": tuned["plain"]["normal_fp_rate"],
            }
        )
        if "lesion_sensitivity" in tuned["chosen"]:
            extra.update(
                {
                    "gate/oof_lesion_sensitivity": tuned["chosen"]["lesion_sensitivity"],
                    "gate/oof_lesion_sensitivity_plain": tuned["plain"]["lesion_sensitivity"],
                }
            )
        if target_sensitivity is not None:
            extra.update({"gate/target_sensitivity": target_sensitivity,
                          "gate/target_reached": tuned["reached"]})  # fmt: skip
    if wandb is not None:
        known = recorded_identity(runs[0])
        sweep = runs[0].parent if all(r.parent == runs[0].parent for r in runs) else out
        wandb = {
            **wandb,
            "name": wandb.get("name") or f"{sweep.name}-ensemble",
            "group": wandb.get("group") or known.get("group") or sweep_group(sweep),
            "job_type": "ensemble",
            "config": {
                **extra.to_metrics(sparse=True),
                "split": split,
                "adapt": adapt,
                "code/git_commit": code_version(),
            },
        }
    metrics = test_module(head, data, split, trainer, out, extra, adapt=adapt, wandb=wandb)
    if export:
        from medmtl.inference.export import export_network

        settings = PreprocessSettings.from_dict(data)
        model = {
            "arch": head.net.arch,
            "encoder": head.net.encoder_name,
            "in_channels": stored_net(hps[0]).in_channels,
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
                "conformal": head.answer_sets.to_dict() if head.answer_sets else None,
                "tta": tta,  # what its temperature, answer sets and gate were fitted with
            },
        )
        log.info("Exported the ensemble to %s", export)
        metrics["export"] = str(export)
    return metrics


def _calibrate_on(
    head: Any, data: dict[str, Any], alpha: float | None, by_class: bool, out: Path
) -> dict[str, Any]:
    """The ensemble's temperature and (``alpha``) answer sets fitted on the validation split of
    ``data`` (calibration.json, conformal.json); its ``calibration/...`` entries."""
    part = _shared_validation(head, data)
    logits = np.log(np.clip(part["prob"], 1e-7, 1.0))
    temperature, sets = fit_calibration(logits, part["label"], alpha, by_class)
    head.net.set_temperature(temperature)
    where = f"validation of {data.get('name') or data.get('source')}"
    extra = {"calibration/temperature": temperature, "calibration/fitted_on": where,
             "calibration/num_images": int(len(part["label"]))}  # fmt: skip
    write_json(out / "calibration.json", extra)
    if sets is not None:
        head.configure_evaluation(answer_sets=sets)
        write_json(out / "conformal.json", sets.to_dict())
    log.info("Ensemble temperature %.4f and answer sets fitted on %d images (%s)", temperature,
             len(part["label"]), where)  # fmt: skip
    return extra


def _shared_validation(head: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The ensemble's class probabilities, its members' mask agreement (multi-task members,
    without test-time flip, as :func:`medmtl.workflows.gate.gate_evidence` measures it out of
    fold) and the labels on its members' shared validation split (members of one fixed split:
    no member trained on it)."""
    import torch

    dm = datamodule_from_config(data)
    dm.setup()
    # labels as the head's class indices: a data set may have fewer classes (a site without
    # normal images), whose own indices would name other classes of the head
    dm.relabel(head.class_names, class_mapping(dm.classes, head.class_names, None))
    head.eval()
    part: dict[str, list] = {"prob": [], "label": [], "agreement": []}
    with torch.no_grad():
        for batch in dm.dataloader("val"):
            views = head.views(batch["image"])  # the image's, then (tta) its mirror's
            out = combine_views(views)
            part["prob"].append(torch.softmax(out["cls"].double(), dim=1).numpy())
            part["label"].append(batch["label"].numpy().astype(np.int64))
            members = views[0].get("member_seg")
            if members is not None:
                part["agreement"].append(mask_agreement(members.float().numpy()))
    empty = {"prob": np.zeros((0, len(head.class_names))), "label": np.zeros(0, np.int64)}
    return {k: np.concatenate(v) if v else empty.get(k, np.zeros(0)) for k, v in part.items()}


def run_ensemble_cli(settings: EnsembleSettings) -> int:
    """Entry point body for ``medmtl-ensemble``: returns the exit status."""
    s = settings
    data = {"root": s.data_root} if s.data_root else None
    select = {}
    for cond in s.select:
        key, sep, value = str(cond).partition("=")
        if not sep:
            raise ConfigError(
                f"select={cond}: expected select=<key>=<value>, e.g. loss.seg_weight=0.7."
            )
        select[key.lstrip("+")] = value
    ensemble(
        s.runs,
        s.out,
        s.split,
        s.export,
        data,
        s.empty_mask_class,
        select=select,
        tta=s.tta,
        gate=s.gate,
        adapt=s.adapt,
        conformal_alpha=s.conformal_alpha,
        conformal_by_class=s.conformal_by_class,
        wandb=option_request(s.wandb, "wandb"),
        target_sensitivity=s.target_sensitivity,
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

    def __init__(
        self,
        out: str = "ensemble",
        split: str = "test",
        gate: str | Mapping[str, Any] = "as_trained",
        target_sensitivity: float | None = None,
    ):
        self.out = out
        self.split = split
        self.gate = gate
        self.target_sensitivity = target_sensitivity

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        """Ensemble the finished sweep (Hydra calls this once, after the last job)."""
        sweep = Path(str(config.hydra.sweep.dir))
        command = f"medmtl-ensemble {sweep} out={sweep / self.out}"
        runs = [r for r in collect_runs(sweep) if not r.is_ensemble]
        if len(runs) < 2:
            return
        bad = [r.reason for r in runs if r.status != "ok"]
        keys = {k for r in runs for k in r.overrides if not pooled(k)}
        mixed = sorted(keys - set(shared_overrides([r.path for r in runs])))
        if bad or mixed:
            why = f"{len(bad)} job(s) did not finish" if bad else f"the jobs differ in {mixed}"
            log.warning("Not ensembling %s: %s. Ensemble by hand: %s", sweep, why, command)
            return
        logger = config.get("logger") or {}
        run = TrainSettings.from_dict(config)  # the sweep's own tta and memory format
        metrics = ensemble(
            [r.path for r in runs],
            sweep / self.out,
            self.split,
            tta=run.tta,
            channels_last=run.channels_last,
            gate=self.gate,
            target_sensitivity=self.target_sensitivity,
            # the sweep's jobs logged to W&B: so does their ensemble, into their group
            wandb=wandb_request(_settings(logger.get("wandb"))),
        )
        log.info(
            "Ensemble of %d runs in %s: %s",
            len(runs),
            sweep / self.out,
            {k: v for k, v in metrics.items() if k.startswith(f"{self.split}/")},
        )


def _settings(node: Any) -> dict[str, Any] | None:
    """A config node as plain values, resolved where it can be (after a sweep some
    interpolations, e.g. the jobs' output folder, no longer resolve; none of them matter here)."""
    if node is None:
        return None
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception:  # noqa: BLE001 - OmegaConf's interpolation errors have several types
        return OmegaConf.to_container(node, resolve=False)

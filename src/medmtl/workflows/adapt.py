"""``medmtl-adapt``: a trained model (one run, or every member of an ensemble) adapted to a
new site with a few of its labelled cases, and calibrated again on that site.

1. **The site's cases** (a manifest CSV) are split once, by patient and stratified by class,
   into cases to learn from and cases held back (``calibrate_fraction``); the split is
   written to ``<out>/site_split.json`` and every member uses it. Too few of either is refused
   in one line before anything is trained.
2. **Each member** is fine-tuned (``medmtl-train init_from=<member>``) in ``<out>/<member>``
   on its own training data, replayed, together with the site's cases (``data=multi``, the
   site drawn ``site_share`` of the time: ``data.set_sampling``; an epoch draws each site
   case about once), validated on its own
   validation images and the site's held-back ones, with its own settings otherwise
   (architecture, loss, augmentation); only the epochs and the learning rate are the
   adaptation's. Its temperature and answer sets are then fitted on the site's held-back
   cases alone (the per-site guarantee); its unlike-training score and shift reference come
   from the fine-tuning (training images: source and site; reference: both held-back sets).
3. **An ensemble** of the adapted members is built as ``medmtl-ensemble`` builds one
   (``<out>/ensemble``: evaluated on the members' test split, the source's) with the source
   ensemble's test-time flip and gate thresholds (its operating point), and its own
   temperature and answer sets are fitted again on the site's held-back cases.
4. **ONNX** (``<out>/model.onnx``) like any model, and ``<out>/adapt.json``: what was adapted
   (each member's run and checkpoint with its SHA-256), with which cases (the manifest, its
   SHA-256, the cases learned from and held back), the settings and the time it took.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, open_dict

from medmtl.errors import ConfigError, DataError
from medmtl.settings.commands import ADAPT_MIN_TRAIN, AdaptSettings

log = logging.getLogger(__name__)
SITE = "site"  # the site's name among the data sets of each fine-tuning
ADAPT_JSON = "adapt.json"


def calibration_minimum(alpha: float) -> int:
    """The fewest held-back cases for which answer sets at error rate ``alpha`` are not every
    class: the conformal quantile needs ``(n + 1)(1 - alpha) <= n``."""
    return math.ceil((1 - alpha) / alpha - 1e-9)


def site_data(settings: AdaptSettings, preprocess: dict[str, Any], classes: list[str]) -> dict:
    """The site's data config: its manifest (labelled with ``classes``, those of the model's
    that it has), split once into cases to learn from and cases held back (no test side),
    read as the model reads images."""
    out = Path(settings.out).resolve()
    return {
        **preprocess,
        "source": "manifest",
        "name": SITE,
        "manifest": str(Path(settings.site).resolve()),
        "classes": list(classes),
        "split_file": str(out / "site_split.json"),
        "split": {
            "seed": settings.seed,
            "val_fraction": settings.calibrate_fraction,
            "test_fraction": 0.0,
        },
    }


def check_site(dm: Any, alpha: float, fraction: float, site: str) -> dict[str, int]:
    """The numbers of site cases to learn from and held back (``fraction`` of them), or one
    line saying there are too few to both adapt and calibrate."""
    n_train, n_val = len(dm.cases("train")), len(dm.cases("val"))
    need = calibration_minimum(alpha)
    if n_train < ADAPT_MIN_TRAIN or n_val < need:
        total = math.ceil(max(ADAPT_MIN_TRAIN / (1 - fraction), need / fraction))
        raise DataError(
            f"{site}: {n_train + n_val} labelled case(s) give {n_train} to learn from and "
            f"{n_val} held back; adapting needs {ADAPT_MIN_TRAIN} to learn from and {need} held "
            f"back to calibrate at alpha {alpha:g} (about {total} cases in all at "
            f"calibrate_fraction={fraction:g}); label more cases."
        )
    return {"train": n_train, "val": n_val}


def _moved(value: Any, old: str, new: str) -> Any:
    """``value`` with every string under the folder ``old`` moved under ``new``."""
    if isinstance(value, dict):
        return {k: _moved(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, old, new) for v in value]
    if isinstance(value, str) and (value == old or value.startswith(old.rstrip("/") + "/")):
        return new + value[len(old) :]
    return value


def member_config(
    run: Path, site: dict[str, Any], settings: AdaptSettings, out: Path, site_cases: int
):
    """The fine-tuning of one member: its own resolved config, starting from its weights, on
    its own data plus the site's, for the adaptation's epochs and learning rate. An epoch is
    as long as it takes to draw each of the ``site_cases`` once on average (the source's
    images fill the rest of its batches), not a pass over all the source's images."""
    from medmtl.data.datamodule import DATA_KEYS
    from medmtl.settings.data import keys as data_keys

    resolved = OmegaConf.to_container(OmegaConf.load(run / "config_resolved.yaml"))
    # every path under the member's own folder (checkpoints, logs) moves to the new one: the
    # member is read, never written
    cfg = OmegaConf.create(_moved(resolved, str(resolved["paths"]["output_dir"]), str(out)))
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if data.get("source") == "multi":
        sets = dict(data.get("sets") or {})
        if data.get("leave_out"):
            sets.pop(data["leave_out"], None)
    else:
        sets = {data.get("name") or data["source"]: {k: data[k] for k in DATA_KEYS if k in data}}
    if SITE in sets:
        raise ConfigError(f"{run}: already trained on a data set named {SITE}.")
    # what the network sees, how batches are drawn and augmented: the member's own
    own = [*data_keys("preprocess"), *data_keys("loader"), *data_keys("module")]
    multi = {k: data[k] for k in own if k in data}
    multi.update(
        source="multi",
        name="adapted",
        classes=list(data.get("classes") or site["classes"]),
        sets={**sets, SITE: site},
        set_sampling={SITE: settings.site_share},
        leave_out=None,
    )
    with open_dict(cfg):
        cfg.data = multi
        cfg.init_from = str(run)
        cfg.ckpt_path = None
        cfg.trainer.max_epochs = settings.epochs
        batch = int(multi.get("batch_size") or 16)
        cfg.trainer.limit_train_batches = max(
            1, math.ceil(site_cases / settings.site_share / batch)
        )
        cfg.optimizer.lr = settings.lr
        if settings.keep == "last" and "model_checkpoint" in (cfg.get("callbacks") or {}):
            # the best by "step" is the last epoch; its validation still runs and is logged
            cfg.callbacks.model_checkpoint.monitor = "step"
            cfg.callbacks.model_checkpoint.mode = "max"
            cfg.callbacks.pop("early_stopping", None)
        cfg.paths.output_dir = str(out)
        cfg.task_name = "adapt"
        if settings.threads:
            cfg.threads = settings.threads
    return cfg


def adapt(settings: AdaptSettings) -> dict[str, Any]:
    """Adapt ``settings.model`` to the site's cases (see the module's docstring); returns the
    record written to ``<out>/adapt.json``."""
    from medmtl.data.build import datamodule_from_config
    from medmtl.data.manifest import read_csv_rows
    from medmtl.io.files import ensure_output_dir, file_sha256
    from medmtl.models.multitask import gate_record
    from medmtl.reporting.summary import write_json
    from medmtl.settings.data import keys as data_keys
    from medmtl.settings.evaluation import GATE_KEYS
    from medmtl.workflows.calibrate import calibrate_module, save_calibration
    from medmtl.workflows.logs import logs_on_success
    from medmtl.workflows.members import best_checkpoint, open_model
    from medmtl.workflows.train import train

    start = time.time()
    out = Path(settings.out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"out={out}: not empty; give a new folder for the adapted model.")
    opened = open_model(settings.model)
    runs = list(opened.members or ([Path(opened.record["run"])] if "run" in opened.record else []))
    if not runs:
        raise ConfigError(
            f"model={settings.model}: a checkpoint alone; give its run folder (its settings "
            "are what the fine-tuning repeats)."
        )
    classes = list(opened.module.class_names)
    # an ensemble is rebuilt as it was evaluated: its flip and its gate's thresholds (a tuned
    # gate is the source's operating point; the adapted members' own would move it)
    source_tta = bool(opened.tta)
    source_gate = {k: v for k, v in gate_record(opened.module.net, classes).items()
                   if k in GATE_KEYS}  # fmt: skip
    # read as the model reads images, cached where its data is
    preprocess = {k: opened.data[k] for k in (*data_keys("preprocess"), "cache_dir")
                  if k in opened.data}  # fmt: skip
    del opened  # the members are opened again, one at a time, by their fine-tuning
    created = not out.exists()
    ensure_output_dir(out, "out")
    # the model's classes the site has (a scanner's cases may have no normal image); a label
    # the model does not know is refused with the other problems of the list
    _, rows = read_csv_rows(Path(settings.site).resolve(), ("image", "label"), "case list")
    present = [c for c in classes if any(r["label"] == c for r in rows)]
    site = site_data(settings, preprocess, present or classes)
    try:
        # a refused site's split file is removed: the data module's advice to keep it waits
        with logs_on_success("medmtl.data.datamodule"):
            site_dm = datamodule_from_config(site)
            site_dm.prepare_data()
            site_dm.setup("fit")
            counts = check_site(site_dm, settings.alpha, settings.calibrate_fraction, settings.site)
        site_dm.relabel(classes, {c: c for c in site_dm.classes})  # the model's class indices
    except BaseException:  # refused before any training: leave no half-made folder behind
        Path(site["split_file"]).unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    log.info("%s: %d cases to learn from, %d held back to calibrate", settings.site,
             counts["train"], counts["val"])  # fmt: skip
    members: list[dict[str, Any]] = []
    adapted: list[Path] = []
    names = [r.name for r in runs]  # members of several sweeps may share a folder name
    if len(set(names)) < len(names):
        names = [f"member{k}" for k in range(len(runs))]
    for run, name in zip(runs, names, strict=True):
        t0 = time.time()
        target = out / name
        metrics = train(member_config(run, site, settings, target, counts["train"]))
        ckpt = best_checkpoint(target)
        tuned = open_model(ckpt)
        tuned.module.configure_evaluation(tta=tuned.tta)  # the views its evaluation uses
        calibration = calibrate_module(tuned.module, site_dm, report=(), alpha=settings.alpha,
                                       unlike_quantile=None, shift_dims=None)  # fmt: skip
        calibration["calibration/fitted_on"] = f"validation of {SITE}"
        save_calibration(ckpt, tuned.module)
        write_json(target / "site_calibration.json", calibration)
        source_ckpt = best_checkpoint(run)
        members.append({
            "from": str(run),
            "from_checkpoint": str(source_ckpt),
            "from_sha256": file_sha256(source_ckpt),
            "run": str(target),
            "checkpoint": str(ckpt),
            "wall_time_s": round(time.time() - t0, 1),
            "val_overall": metrics.get("val/overall"),
            **calibration,
        })  # fmt: skip
        adapted.append(target)
    export = out / "model.onnx" if settings.export else None
    if len(adapted) > 1:  # the ensemble of the adapted members, calibrated on the site too
        from medmtl.workflows.ensemble import ensemble

        model_dir = out / "ensemble"
        ensemble(adapted, model_dir, split="test", export=export, conformal_alpha=settings.alpha,
                 calibration_data=site, tta=source_tta, gate=source_gate)  # fmt: skip
    else:
        model_dir = adapted[0]
        if export is not None:
            from medmtl.inference.export import export_onnx

            export_onnx(best_checkpoint(model_dir), export)
    record = {
        "adapted_from": str(settings.model),
        "model": str(model_dir),
        "export": None if export is None else str(export),
        "site": {
            "manifest": str(Path(settings.site).resolve()),
            "sha256": file_sha256(settings.site),
            "split_file": site["split_file"],
            "learned_from": [str(c.image) for c in site_dm.cases("train")],
            "held_back": [str(c.image) for c in site_dm.cases("val")],
        },
        "settings": settings.to_dict(),
        "ensemble": {"tta": source_tta, "gate": source_gate} if len(adapted) > 1 else None,
        "members": members,
        "wall_time_s": round(time.time() - start, 1),
    }
    write_json(out / ADAPT_JSON, record)
    return record

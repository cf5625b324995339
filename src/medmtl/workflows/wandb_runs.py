"""Weights & Biases runs that a researcher can build the paper from (``logger=wandb``).

Every W&B run of medmtl names and groups itself: the name from the run's settings
(``unet-lite2-λ0.7-fold3``), the group from the sweep folder (one group per sweep; a single run
is grouped by its task), ``job_type`` train / eval / ensemble / tables, the full resolved config
flattened (``data.image_size``, ...), the code version (git commit) and the sha256 of each data
split file. During training a fixed sample of validation images (the same every epoch,
``logger.wandb.media.n_images``) is logged with its predicted and true masks as W&B
segmentation media; after the test the per-image predictions become a ``wandb.Table`` with a
thumbnail of each scan and both masks. ``logger.wandb.log_model=true`` logs the best checkpoint
(with ``metrics.json``, the config and the split files; ``logger.wandb.log_onnx=true`` adds an
ONNX export) as a versioned ``model`` artifact whose folder ``medmtl-predict model=`` and
``medmtl-eval ckpt_path=`` open.

W&B runs offline unless the user turns it online (``logger.wandb.offline=false``, or
``wandb=online`` for medmtl-ensemble / ``--wandb online`` for medmtl-tables);
``WANDB_MODE=disabled`` turns it off everywhere. A W&B problem never loses a run's results: it
is logged as a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from medmtl.config import project_root
from medmtl.errors import ConfigError
from medmtl.inference.core import ARTIFACT_CKPT, ARTIFACT_ONNX
from medmtl.io.files import file_sha256
from medmtl.metrics import dice_iou
from medmtl.reporting.per_image import PerImage, masks_in_order
from medmtl.reporting.wandb_media import figure_media, masked_image, predictions_table, scalars
from medmtl.settings.model import NetSettings

log = logging.getLogger(__name__)

# medmtl's own settings in ``logger.wandb`` (the rest goes to Lightning's WandbLogger)
N_IMAGES = 8  # validation images logged with their masks each epoch (logger.wandb.media.n_images)


@dataclass(frozen=True)
class WandbOwn:
    """medmtl's own keys of ``logger.wandb`` (the others are WandbLogger's arguments)."""

    log_model: bool = False  # the best checkpoint as a versioned W&B model artifact
    log_onnx: bool = False  # (with log_model) an ONNX export in the artifact too


OWN_KEYS = ("media", *(f.name for f in fields(WandbOwn)))
JOB_TYPES = ("train", "eval", "ensemble", "tables")
MODES = ("offline", "online")
_GROUP_MAX = 128  # W&B's limit on a group name


def is_wandb(logger: Any) -> bool:
    """Whether a Lightning logger is W&B's."""
    return type(logger).__name__ == "WandbLogger"


def split_own_settings(settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``logger.wandb`` as (Lightning WandbLogger's arguments, medmtl's own settings) with the
    defaults filled in and checked: ``media.n_images`` a whole number ≥ 0, ``log_model`` and
    ``log_onnx`` true or false."""
    lightning = {k: v for k, v in settings.items() if k not in OWN_KEYS}
    media = dict(settings.get("media") or {})
    n = media.get("n_images", N_IMAGES)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(
            f"logger.wandb.media.n_images={n!r}: a whole number of validation images, 0 or more "
            f"(0: none; default {N_IMAGES})."
        )
    own = {"n_images": n}
    for key in (f.name for f in fields(WandbOwn)):
        value = settings.get(key, getattr(WandbOwn, key))
        if not isinstance(value, bool):
            raise ConfigError(f"logger.wandb.{key}={value!r}: true or false.")
        own[key] = value
    if own["log_onnx"] and not own["log_model"]:
        raise ConfigError("logger.wandb.log_onnx=true exports into the model artifact: also set "
                          "logger.wandb.log_model=true.")  # fmt: skip
    # the model artifact is medmtl's (Lightning's log_model refuses offline runs)
    lightning["log_model"] = False
    # W&B's own mode argument, not Lightning's offline=True: that sets WANDB_MODE=dryrun for the
    # whole process, overriding WANDB_MODE=disabled and every later run
    lightning["mode"] = wandb_mode(online=lightning.get("offline") is False)
    lightning["offline"] = False
    return lightning, own


def check_online(option: str) -> None:
    """Logging online needs W&B's server (``WANDB_BASE_URL``, else api.wandb.ai) and a login
    (``WANDB_API_KEY`` or ``wandb login``'s netrc entry) on this machine: one line if either is
    missing, instead of W&B's retries for minutes or a prompt a batch job never answers."""
    import netrc
    import socket
    from urllib.parse import urlparse

    base = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    url = urlparse(base)
    host = url.hostname or base
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError:
        raise ConfigError(
            f"{option}: W&B's server {base} cannot be reached from here; log offline (the "
            "default) and upload the run later with `wandb sync <run>/wandb/offline-run-*`."
        ) from None
    if os.environ.get("WANDB_API_KEY"):
        return
    try:
        logged_in = netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        logged_in = False
    if not logged_in:
        raise ConfigError(
            f"{option}: no W&B login on this machine for {host} (set WANDB_API_KEY or run "
            "`wandb login`), or log offline (the default)."
        )


def wandb_mode(online: bool) -> str:
    """W&B's mode: offline unless asked online; ``WANDB_MODE=disabled`` always wins."""
    if os.environ.get("WANDB_MODE", "").strip().lower() == "disabled":
        return "disabled"
    return "online" if online else "offline"


# -- names, groups, the config ------------------------------------------------------------------
def _short_encoder(name: str) -> str:
    short = re.sub(r"^tu-", "", str(name))
    return re.sub(r"^(tf_)?efficientnet_(lite\d)$", r"\2", short)


def run_name(net: NetSettings, seg_weight: Any, fold: Any = None, seed: Any = None) -> str:
    """``unet-lite2-λ0.7-fold3``: architecture, encoder, λ (or the single task), fold, seed."""
    parts = [net.arch.lower(), _short_encoder(net.encoder)]
    parts.append(f"λ{seg_weight}" if net.task == "multitask" else net.task)
    if fold is not None:
        parts.append(f"fold{fold}")
    if seed is not None:
        parts.append(f"seed{seed}")
    return "-".join(parts)


def sweep_group(sweep_dir: str | Path, output_root: str | Path | None = None) -> str:
    """The group of a sweep's runs: its folder, relative to the output root where inside it
    (``multirun/table_lambda/busi_5fold``), at most W&B's 128 characters (the end kept)."""
    path = Path(str(sweep_dir)).expanduser().resolve()
    if output_root is not None:
        root = Path(str(output_root)).expanduser().resolve()
        if root in path.parents:
            path = path.relative_to(root)
    return str(path)[-_GROUP_MAX:]


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level, ``data.image_size``-style keys (lists stay lists)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_config(value, name + "."))
        else:
            out[name] = value
    return out


def code_version(root: Path | None = None) -> str | None:
    """The git commit of the code that ran (``+dirty`` with uncommitted changes), or None
    outside a git checkout (an installed package)."""
    where = root or project_root()
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit or None


def split_record(files: Mapping[str, Path]) -> dict[str, str]:
    """Each data split file and its sha256 (``data/split_file/<data set>``,
    ``data/split_sha256/<data set>``)."""
    out = {}
    for name, path in files.items():
        out[f"data/split_file/{name}"] = str(path)
        out[f"data/split_sha256/{name}"] = file_sha256(path)
    return out


def run_record(config: Mapping[str, Any], split_files: Mapping[str, Path]) -> dict[str, Any]:
    """What a W&B run's config holds: the flattened config, the code version, the splits."""
    return {
        **flat_config(config),
        "code/git_commit": code_version(),
        **split_record(split_files),
    }


# -- a W&B run outside training (eval, ensemble, tables) ----------------------------------------
def recorded_identity(model: str | Path) -> dict[str, str]:
    """The W&B name and group a trained model's run recorded in its ``metrics.json`` (a
    checkpoint, a run, an ensemble or a sweep folder), or {} if it had no W&B run."""
    p = Path(str(model))
    places = [p / "metrics.json", p / "ensemble" / "metrics.json"]
    if p.suffix == ".ckpt":
        places = [p.parent.parent / "metrics.json", p.parent / "metrics.json"]
    for place in places:
        if place.is_file():
            try:
                m = json.loads(place.read_text())
            except ValueError:
                continue
            if m.get("wandb/group"):
                return {"name": str(m.get("wandb/name") or p.name), "group": str(m["wandb/group"])}
    return {}


def wandb_request(settings: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What a command's ``logger.wandb`` (or ``wandb=`` option) asks for: project, online,
    group, name, tags and the number of images (None: no W&B run)."""
    if not settings or "_target_" not in settings:
        return None
    lightning, own = split_own_settings(settings)
    if lightning["mode"] == "online":  # asked once, here, not by every reader of the settings
        check_online("logger.wandb.offline=false")
    return {
        "project": settings.get("project") or "medmtl",
        "online": settings.get("offline") is False,
        "group": settings.get("group"),
        "name": settings.get("name"),
        "tags": list(settings.get("tags") or []),
        "n_images": own["n_images"],
    }


def option_request(value: Any, option: str) -> dict[str, Any] | None:
    """``wandb=none|offline|online`` of a command line as :func:`wandb_request`'s answer."""
    value = "none" if value in (None, False) else str(value).lower()
    if value not in ("none", *MODES):
        raise ConfigError(f"{option}={value}: choose none, offline or online.")
    if value == "none":
        return None
    if wandb_mode(value == "online") == "online":
        check_online(f"{option}=online")
    return {"project": "medmtl", "online": value == "online", "group": None, "name": None,
            "tags": [], "n_images": N_IMAGES}  # fmt: skip


def log_to_new_run(
    request: Mapping[str, Any],
    job_type: str,
    out_dir: Path,
    split: str,
    metrics: dict[str, Any],
    per: PerImage | None,
    samples: Mapping[str, torch.Tensor] | None,
    figures: Sequence[Path],
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """One evaluation (``job_type`` eval or ensemble) as its own W&B run: the per-image table,
    masks, figures and metrics. Returns the run's id, name and group (``wandb/*``, for the
    run record; empty when nothing was logged)."""
    identity: dict[str, Any] = {}

    def run_it() -> None:
        run = open_run(job_type, str(request["name"]), str(request["group"]), config, out_dir,
                       request["online"], request["project"], request["tags"])  # fmt: skip
        if getattr(run, "disabled", False):  # WANDB_MODE=disabled
            run.finish()
            return
        try:
            log_evaluation(run, out_dir, split, metrics, per, samples, request["n_images"], figures)
            identity.update({"wandb/run_id": run.id, "wandb/name": run.name,
                             "wandb/group": run.group})  # fmt: skip
        finally:
            run.finish()

    guarded(f"log the {job_type} run", run_it)
    return identity


def open_run(
    job_type: str,
    name: str,
    group: str,
    config: Mapping[str, Any],
    out_dir: Path,
    online: bool = False,
    project: str = "medmtl",
    tags: Sequence[str] = (),
) -> Any:
    """A W&B run writing into ``out_dir/wandb`` (offline unless ``online``)."""
    import wandb

    if job_type not in JOB_TYPES:
        raise ValueError(job_type)
    return wandb.init(
        project=project,
        name=name,
        group=group,
        job_type=job_type,
        config=dict(config),
        dir=str(out_dir),
        mode=wandb_mode(online),
        tags=list(tags),
        reinit="finish_previous",
    )


def guarded(what: str, fn: Callable[[], Any]) -> Any:
    """Run a W&B step; a W&B problem becomes a warning, never a lost result."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - W&B raises its own and third-party errors
        log.warning("W&B: could not %s (%s); the run's own files are complete.", what, exc)
        return None


# -- what every run logs -------------------------------------------------------------------------
def log_evaluation(
    run: Any,
    out_dir: Path,
    split: str,
    metrics: Mapping[str, Any],
    per: PerImage | None,
    samples: Mapping[str, torch.Tensor] | None,
    n_images: int = N_IMAGES,
    figures: Sequence[Path] = (),
) -> None:
    """The split's per-image table (one row per image of ``predictions_<split>.csv``, with a
    thumbnail and both masks when the model segments), its first ``n_images`` scans with
    their masks, the figures, and the metrics in the run's summary."""
    csv_path = out_dir / f"predictions_{split}.csv"
    media: dict[str, Any] = figure_media(figures)
    if per is not None and csv_path.is_file():
        masks = None
        if samples is not None and "pred_mask" in samples:
            masks = masks_in_order(per.ids, dict(samples), str(csv_path))
            media[f"{split}/masks"] = [
                masked_image(masks["image"][i], masks["pred_mask"][i], masks["mask"][i], per.ids[i])
                for i in range(min(n_images, len(per.ids)))
            ]
        media[f"{split}/predictions"] = predictions_table(csv_path, masks)
    if media:
        run.log(media)
    run.summary.update(scalars(metrics))


class ValidationMasks(Callback):
    """Logs the same validation images after every validation epoch, each with its predicted
    and true mask as W&B segmentation media (the image's id, classes and Dice in the caption).

    The sample is spread over the validation split (every ⌈n/k⌉-th image) and fixed for the
    run; its outputs come from :meth:`MultiTaskModule.scored_outputs` (no metric is touched,
    no random number drawn), so the training is the same with and without it.
    """

    def __init__(self, n_images: int = N_IMAGES) -> None:
        self.n_images = int(n_images)
        self._batch: dict[str, Any] | None = None

    def _sample(self, trainer: L.Trainer) -> dict[str, Any] | None:
        if self._batch is None:
            dm = trainer.datamodule
            with torch.random.fork_rng(devices=[]):  # building a data set draws a seed
                dataset = dm.dataset("val")
            n = len(dataset)
            if n == 0 or self.n_images == 0:
                return None
            picks = np.unique(np.linspace(0, n - 1, min(self.n_images, n)).round().astype(int))
            with torch.random.fork_rng(devices=[]):
                items = [dataset[int(i)] for i in picks]
            cases = dm.cases("val")
            self._batch = {
                "image": torch.stack([it["image"] for it in items]),
                "mask": torch.stack([it["mask"] for it in items]),
                "label": [int(it["label"]) for it in items],
                "ids": [cases[int(i)].case_id for i in picks],
            }
        return self._batch

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        loggers = [lg for lg in trainer.loggers if is_wandb(lg)]
        fitting = trainer.state.fn == "fit"  # not the best checkpoint's validation after it
        if trainer.sanity_checking or not fitting or not trainer.is_global_zero or not loggers:
            return
        guarded("log the validation masks", lambda: self._log(trainer, pl_module, loggers))

    def _log(self, trainer: L.Trainer, module: Any, loggers: Iterable[Any]) -> None:
        batch = self._sample(trainer)
        if batch is None or module.task == "cls":
            return
        out = module.scored_outputs(batch["image"].to(module.device))
        pred = out["pred_mask"].cpu().numpy()
        truth = batch["mask"].numpy() >= 0.5
        dims = (1, 2, 3)
        dice = dice_iou((pred & truth).sum(dims), (pred & ~truth).sum(dims),
                        (~pred & truth).sum(dims))[0]  # fmt: skip
        scans = module.display_images(batch["image"]).numpy()[:, 0]
        names = module.class_names
        images = []
        for i, case_id in enumerate(batch["ids"]):
            said = f" → {names[int(out['prob'][i].argmax())]}" if out["prob"] is not None else ""
            caption = f"{case_id} · {names[batch['label'][i]]}{said} · Dice {float(dice[i]):.3f}"
            images.append(masked_image(scans[i], pred[i, 0], truth[i, 0], caption))
        for lg in loggers:
            lg.log_metrics({"val/masks": images}, step=trainer.global_step)


def log_model_artifact(
    run: Any,
    name: str,
    best_ckpt: Path,
    out_dir: Path,
    metrics: Mapping[str, Any],
    split_files: Mapping[str, Path],
    onnx: Path | None = None,
) -> Any:
    """The best checkpoint as a versioned W&B ``model`` artifact (aliases best, latest): files
    ``model.ckpt``, ``metrics.json``, ``config_resolved.yaml``, the split files (and
    ``model.onnx``); the test and validation metrics and the split hashes in its metadata.
    Downloaded, its folder is a model for ``medmtl-predict model=<folder>``."""
    import wandb

    metadata = {k: v for k, v in scalars(metrics).items() if k.startswith(("test/", "val/"))}
    metadata.update(split_record(split_files))
    metadata["run"] = str(out_dir)
    artifact = wandb.Artifact(_artifact_name(name, run), type="model", metadata=metadata)
    # immutable: W&B references the run's own files instead of copying them
    artifact.add_file(str(best_ckpt), name=ARTIFACT_CKPT, policy="immutable")
    for extra in ("metrics.json", "config_resolved.yaml"):
        if (out_dir / extra).is_file():
            artifact.add_file(str(out_dir / extra), name=extra, policy="immutable")
    for data_name, path in split_files.items():
        artifact.add_file(str(path), name=f"splits/{data_name}.json", policy="immutable")
    if onnx is not None:
        artifact.add_file(str(onnx), name=ARTIFACT_ONNX, policy="immutable")
    return run.log_artifact(artifact, aliases=["best", "latest"])


def _artifact_name(name: str, run: Any) -> str:
    # W&B allows letters, digits, '-', '_' and '.'; the run id keeps two runs' models apart
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("λ", "lambda"))
    return f"model-{safe}-{run.id}"

"""Resuming a training run from a checkpoint, in the checkpoint's own run folder."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from medmtl.errors import ConfigError, MedmtlError
from medmtl.io.files import atomic_write_text
from medmtl.models.checkpoint import load_checkpoint, stored_net
from medmtl.settings.model import NetSettings

log = logging.getLogger(__name__)


def resume_in_run_folder(cfg: DictConfig, net: NetSettings) -> dict[str, Any]:
    """Resuming: refuse another model, and continue in the checkpoint's own run folder.

    The run folder keeps its best-checkpoint tracking (Lightning restores it only in the same
    folder); the CSV log so far is set aside and merged back after training
    (:func:`merge_csv_logs`). Returns the checkpoint's hyper-parameters.
    """
    ckpt_path = Path(cfg.ckpt_path).expanduser()
    ckpt = load_checkpoint(ckpt_path)  # refuse anything that is not a safe medmtl checkpoint
    hp = ckpt["hyper_parameters"]
    ignore = {"encoder_weights", "encoder_study"}  # the weights come from the checkpoint
    now = {k: v for k, v in net.to_dict().items() if k not in ignore}
    then = {k: v for k, v in stored_net(hp).to_dict().items() if k not in ignore}
    differ = [k for k in sorted(set(now) | set(then)) if now.get(k) != then.get(k)]
    if differ:
        detail = "; ".join(
            f"{k}: {then.get(k)!r} in the checkpoint, {now.get(k)!r} now" for k in differ
        )
        raise ConfigError(
            f"ckpt_path={ckpt_path}: trained with other model settings ({detail}); resume with "
            "the checkpoint's settings (its run folder has them in config_resolved.yaml)."
        )
    run = ckpt_path.resolve().parent.parent
    if (
        ckpt_path.resolve().parent.name != "checkpoints"
        or not (run / "config_resolved.yaml").exists()
    ):
        log.warning("%s is not inside a run folder: the resumed run starts a new one.", ckpt_path)
        return hp
    if "epoch" not in ckpt:  # Lightning writes it into every checkpoint it can resume from
        raise MedmtlError(
            f"{ckpt_path}: no training state to resume (no epoch); resume from a run's "
            "checkpoints/last.ckpt, or train anew from its settings."
        )
    epoch = int(ckpt["epoch"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
    old_csv = run / "csv" / "metrics.csv"
    if old_csv.exists():
        old_csv.replace(old_csv.with_name(f"metrics.until_epoch{epoch:04d}.csv"))
    config = run / "config_resolved.yaml"
    config.replace(run / f"config_resolved.until_epoch{epoch:04d}.yaml")
    log.info("Resuming %s after epoch %d in its own folder %s", ckpt_path.name, epoch, run)
    return hp


def merge_csv_logs(csv_dir: Path) -> None:
    """One ``metrics.csv`` again after resumes: each earlier part up to its checkpoint's epoch
    (rows logged after that checkpoint were lost with the interrupted run), then this run's."""
    parts = sorted(csv_dir.glob("metrics.until_epoch*.csv"))
    if not parts:
        return
    rows: list[dict] = []
    for part in parts:
        last = int(part.stem.split("until_epoch")[1])
        for row in csv.DictReader(part.open()):
            epoch = row.get("epoch")
            if epoch in (None, "") or int(float(epoch)) <= last:
                rows.append(row)
    current = csv_dir / "metrics.csv"
    if current.exists():
        rows += list(csv.DictReader(current.open()))
    keys = sorted({k for row in rows for k in row})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(current, buf.getvalue())
    for part in parts:
        part.unlink()

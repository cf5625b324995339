"""W&B runs offline by default (no network) and TensorBoard works; both beside the CSV log."""

from __future__ import annotations

import pytest

from medmtl.workflows.train import train
from tests.conftest import TINY_MODEL, TINY_PHANTOM


def test_wandb_offline(make_cfg, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg(TINY_PHANTOM + TINY_MODEL + ["logger=wandb", "debug=fast_dev_run"], name="wb")
    assert cfg.logger.wandb.offline is True
    train(cfg)
    assert list((tmp_path / "wb" / "wandb").glob("offline-run-*"))


def test_tensorboard(make_cfg, tmp_path):
    pytest.importorskip("tensorboard")
    cfg = make_cfg(
        TINY_PHANTOM
        + TINY_MODEL
        + ["logger=tensorboard", "trainer.max_epochs=1", "trainer.deterministic=true"],
        name="tb",
    )
    train(cfg)
    assert list((tmp_path / "tb" / "tensorboard").rglob("events.out.tfevents.*"))
    assert (tmp_path / "tb" / "csv" / "metrics.csv").exists()

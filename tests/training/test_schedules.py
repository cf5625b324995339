"""Optimizer and learning-rate schedule as config groups (conf/optimizer, conf/scheduler)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from medmtl.config import CONFIG_DIR, compose
from medmtl.training.module import build_optimizer, build_scheduler


def _lrs(optimizer_cfg: dict, scheduler_cfg: dict | None, epochs: int) -> list[float]:
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = build_optimizer(optimizer_cfg, params)
    sched = build_scheduler(scheduler_cfg, opt, epochs)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out


def _group(name: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / name).glob("*.yaml"))


@pytest.mark.parametrize("optimizer", _group("optimizer"))
@pytest.mark.parametrize("scheduler", _group("scheduler"))
def test_every_optimizer_and_schedule_builds_from_plain_values(optimizer, scheduler):
    cfg = compose("train", [f"optimizer={optimizer}", f"scheduler={scheduler}"])
    opt_cfg = OmegaConf.to_container(cfg.optimizer, resolve=True)
    sched_cfg = OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.scheduler else None
    # what the checkpoint stores: plain values only, so weights_only loading keeps working
    buf = io.BytesIO()
    torch.save({"optimizer": opt_cfg, "scheduler": sched_cfg}, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True) == {"optimizer": opt_cfg, "scheduler": sched_cfg}
    lrs = _lrs(opt_cfg, sched_cfg, 12)
    assert (
        type(build_optimizer(opt_cfg, [torch.nn.Parameter(torch.zeros(1))])).__name__.lower()
        == optimizer
    )
    assert all(lr > 0 for lr in lrs)
    assert (len(set(lrs)) == 1) == (scheduler == "none")


def test_cosine_with_warmup_is_the_documented_curve():
    lr, low, epochs = 1e-3, 1e-5, 6
    got = _lrs(
        {"_target_": "torch.optim.AdamW", "lr": lr},
        {"_target_": "medmtl.training.schedules.cosine", "warmup_epochs": 1, "min_lr": low},
        epochs,
    )
    want = [0.1 * lr] + [
        low + (lr - low) * (1 + math.cos(math.pi * k / (epochs - 1))) / 2 for k in range(epochs - 1)
    ]
    assert got == pytest.approx(want, rel=1e-6)


def test_step_schedule_and_a_plain_torch_scheduler():
    got = _lrs(
        {"_target_": "torch.optim.SGD", "lr": 0.1},
        {"_target_": "medmtl.training.schedules.step", "step_size": 2, "gamma": 0.5},
        5,
    )
    assert got == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    # a torch scheduler that needs no max_epochs is used as it is
    got = _lrs(
        {"_target_": "torch.optim.SGD", "lr": 0.1},
        {"_target_": "torch.optim.lr_scheduler.ExponentialLR", "gamma": 0.5},
        3,
    )
    assert got == pytest.approx([0.1, 0.05, 0.025])


def test_checkpoints_from_before_the_config_groups_still_build():
    from medmtl.models.upgrade import upgrade

    def old(optimizer: dict, scheduler: dict) -> dict:  # as loaded: upgrade() converts them
        hp = {"model": {}, "optimizer": optimizer, "scheduler": scheduler}
        return upgrade(hp)

    params = [torch.nn.Parameter(torch.zeros(1))]
    hp = old({"name": "adamw", "lr": 2e-3, "weight_decay": 0.0},
             {"name": "cosine", "warmup_epochs": 0, "min_lr": 0.0})  # fmt: skip
    opt = build_optimizer(hp["optimizer"], params)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == 2e-3
    sched = build_scheduler(hp["scheduler"], opt, 4)
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert (
        build_scheduler(old({"name": "sgd", "lr": 0.1}, {"name": "none"})["scheduler"], opt, 4)
        is None
    )
    assert hp["model"]["norm"] == "batch" and hp["model"]["mask_threshold"] == 0.5

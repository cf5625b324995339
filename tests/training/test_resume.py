"""Resuming an interrupted run: same folder, best model kept, longer schedules, same batches."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch

from medmtl.errors import ConfigError
from medmtl.workflows.train import train
from tests.conftest import TINY_MODEL, TINY_PHANTOM, compose_cfg

TINY = TINY_PHANTOM + TINY_MODEL + ["seed=0", "trainer.log_every_n_steps=1"]


class CrashAtEpoch(L.Callback):
    """Kills the run at the start of an epoch, after the previous epoch's checkpoints."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def _csv_rows(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "csv" / "metrics.csv").open()))


def test_resume_continues_the_same_run_and_matches_an_uninterrupted_one(tmp_path, cache_dir):
    whole = tmp_path / "whole"
    ref = train(compose_cfg(TINY + ["trainer.max_epochs=3"], whole, cache_dir))

    run = tmp_path / "run"
    crash = ["+callbacks.crash._target_=tests.training.test_resume.CrashAtEpoch"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(
            compose_cfg(
                TINY + ["trainer.max_epochs=3", *crash, "+callbacks.crash.epoch=2"], run, cache_dir
            )
        )
    best_before = sorted(p.name for p in (run / "checkpoints").glob("epoch*.ckpt"))
    assert best_before and (run / "checkpoints" / "last.ckpt").is_file()

    new_folder = tmp_path / "new"  # what Hydra would make for the resuming command
    last = run / "checkpoints" / "last.ckpt"
    res = train(
        compose_cfg(TINY + ["trainer.max_epochs=3", f"ckpt_path={last}"], new_folder, cache_dir)
    )
    assert not new_folder.exists()  # everything went to the run's own folder
    assert json.loads((run / "metrics.json").read_text())["resumed_from"] == str(last)
    # the best checkpoint is chosen over all epochs, before and after the resume
    assert Path(res["best_ckpt"]).parent == run / "checkpoints"
    assert res["best_ckpt"] and Path(res["best_ckpt"]).name == Path(ref["best_ckpt"]).name
    # restored random state and data order: the same numbers as the uninterrupted run
    for key in ("val/overall", "test/cls_acc", "test/cls_auc", "test/seg_dice", "test/overall"):
        assert res[key] == pytest.approx(ref[key], abs=1e-6), key
    # one CSV log over all epochs, no epoch logged twice, no epoch past the trained ones
    epochs = sorted({int(float(r["epoch"])) for r in _csv_rows(run) if r.get("train/loss")})
    assert epochs == [0, 1, 2]
    val = [r for r in _csv_rows(run) if r.get("val/overall")]
    ref_val = [r for r in _csv_rows(whole) if r.get("val/overall")]
    assert [r["epoch"] for r in val] == [r["epoch"] for r in ref_val]
    assert not list((run / "csv").glob("metrics.until_epoch*"))


def test_resume_with_a_longer_schedule(tmp_path, cache_dir):
    run = tmp_path / "run"
    train(compose_cfg(TINY + ["trainer.max_epochs=1"], run, cache_dir))
    last = run / "checkpoints" / "last.ckpt"
    # 1 epoch had no warm-up; 3 epochs have one: the schedule changes shape
    res = train(
        compose_cfg(TINY + ["trainer.max_epochs=3", f"ckpt_path={last}"], tmp_path / "n", cache_dir)
    )
    assert res["epochs"] == 3
    ref = train(compose_cfg(TINY + ["trainer.max_epochs=3"], tmp_path / "ref", cache_dir))
    assert ref["epochs"] == 3
    # the learning rate of each epoch, in order (one LearningRateMonitor row per epoch)
    lrs, ref_lrs = (
        [float(r["lr-AdamW"]) for r in _csv_rows(d) if r.get("lr-AdamW")]
        for d in (run, tmp_path / "ref")
    )
    assert len(lrs) == len(ref_lrs) == 3
    # the resumed epochs follow the 3-epoch schedule exactly
    assert lrs[1:] == pytest.approx(ref_lrs[1:], rel=1e-9)
    assert lrs[0] != pytest.approx(ref_lrs[0])  # epoch 0 ran under the 1-epoch schedule


def test_resume_with_another_model_names_the_setting(tmp_path, cache_dir, tiny_ckpt):
    cfg = compose_cfg(
        TINY + ["model/encoder=efficientnet_lite1", f"ckpt_path={tiny_ckpt}"],
        tmp_path / "x",
        cache_dir,
    )
    with pytest.raises(
        ConfigError,
        match=r"encoder: 'tu-efficientnet_lite0' in the checkpoint, 'tu-efficientnet_lite1' now",
    ):
        train(cfg)


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    import numpy as np

    from medmtl.training.module import rng_state, set_rng_state

    torch.manual_seed(3)
    np.random.seed(3)
    state = rng_state()
    torch.save(state, tmp_path / "s.pt")
    a = (torch.rand(3), np.random.rand(3))
    set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True))
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all()


def test_training_curves_end_at_the_last_trained_epoch(tmp_path):
    """The best checkpoint's validation after fitting is logged one epoch past the last one."""
    from medmtl.reporting.evaluation import curves_figure

    log = tmp_path / "metrics.csv"
    rows = ["epoch,step,train/loss,val/overall"]
    rows += [f"{e},{e * 3 + k},0.{9 - e},".rstrip() for e in (0, 1) for k in range(3)]
    rows += ["0,2,,0.5", "1,5,,0.6", "2,5,,0.6"]  # the last: the post-fit validation
    log.write_text("\n".join(rows) + "\n")
    fig = curves_figure(log)
    xs = [x for ax in fig.axes for line in ax.get_lines() for x in line.get_xdata()]
    assert max(xs) == 1 and min(xs) == 0

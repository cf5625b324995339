"""Bad settings are refused in one line before any data is read (issue: hardened edges)."""

from __future__ import annotations

import pytest

from medmtl.errors import ConfigError
from medmtl.workflows.train import train
from tests.conftest import compose_cfg, run_cli

# a data folder that does not exist: a setting refused first was checked before any data
NO_DATA = ["data=folder", "data.root=/nonexistent/medmtl-data"]


@pytest.mark.parametrize(
    "setting,message",
    [
        ("loss.seg_weight=abc", "loss.seg_weight=abc: λ must be a number in [0, 1]"),
        ("loss.seg_weight=1.5", "loss.seg_weight=1.5: λ must be a number in [0, 1]"),
        ("data.image_size=100", "data.image_size=100: must be a positive multiple of 32"),
        ("data.image_size=0", "data.image_size=0: must be a positive multiple of 32"),
        ("data.batch_size=0", "data.batch_size=0: expected an integer 1 or more"),
        ("data.batch_size=-4", "data.batch_size=-4: expected an integer 1 or more"),
        ("trainer.max_epochs=-5", "trainer.max_epochs=-5: expected an integer 1 or more"),
        ("model.arch.name=Unett", "model.arch.name='Unett' is not a supported architecture"),
        ("model.encoder.name=resnet19", "model.encoder.name='resnet19' is not an encoder"),
        ("loss.seg=dicey", "loss.seg='dicey' is unknown"),
        ("loss.presence_weight=-1", "loss.presence_weight=-1: must be a number ≥ 0"),
        ("model.norm=layer", "model.norm='layer' is unknown; choose one of batch, group"),
        (
            "data.augment.amplitude_mix=1.5",
            "data.augment.amplitude_mix=1.5: expected a number between 0 and 1",
        ),
        ("calibration.temperature=maybe", "calibration.temperature=maybe: expected true or false"),
        ("conformal.alpha=1.5", "conformal.alpha=1.5: expected an error rate between 0 and 1"),
        ("unlike.quantile=1", "unlike.quantile=1: expected a share between 0 and 1"),
        ("unlike.quantile=most", "unlike.quantile=most: expected a share between 0 and 1"),
        ("model.mask_threshold=1", "model.mask_threshold=1: expected a mask probability"),
        ("model.deep_supervision=true model/arch=fpn", "FPN has none medmtl supervises"),
        ("loss.deep_supervision_weight=-1", "loss.deep_supervision_weight=-1: must be a number"),
        ("data.progressive_resize.start_size=100", "start_size=100: must be a positive multiple"),
        ("data.progressive_resize.start_size=320", "must be smaller than data.image_size"),
        ("distill.teacher=/x distill.weight=0", "distill.weight=0: must be in (0, 1]"),
        ("distill.teacher=/x distill.temperature=0", "distill.temperature=0: must be > 0"),
        ("distill.teacher=/nonexistent/ensemble", "/nonexistent/ensemble: not found"),
        ("optimizer._target_=torch.optim.Nope", "optimizer: cannot use 'torch.optim.Nope'"),
        ("scheduler._target_=medmtl.training.schedules.nope", "scheduler: cannot use"),
    ],
)
def test_bad_setting_refused_before_the_data(setting, message, tmp_path, cache_dir):
    cfg = compose_cfg([*NO_DATA, *setting.split()], tmp_path / "run", cache_dir)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert message in str(err.value)
    assert not (tmp_path / "run").exists()  # nothing written either


def test_cli_bad_setting_is_one_line_exit_2(tmp_path):
    res = run_cli(
        "train", *NO_DATA, "data.image_size=100", f"hydra.run.dir={tmp_path / 'run'}", timeout=300
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("medmtl: error:")]
    assert (
        len(errors) == 1 and "data.image_size=100: must be a positive multiple of 32" in errors[0]
    )


def test_cli_run_folder_that_is_a_file(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("x")
    res = run_cli("train", *NO_DATA, f"hydra.run.dir={taken}", timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "is an existing file" in res.stderr
    assert taken.read_text() == "x"

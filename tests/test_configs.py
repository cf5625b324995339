"""Every config group option composes; experiment and debug configs compose with train.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from medmtl.config import CONFIG_DIR
from medmtl.workflows.train import model_kwargs

CONF = Path(CONFIG_DIR)
GROUPS = [
    "data",
    "model/arch",
    "model/encoder",
    "loss",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "debug",
]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


CASES = [(g, o) for g in GROUPS for o in _options(g)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes(group, option, tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"{group}={option}", "data.root=/x", "paths.output_dir=/tmp/x"]
        )
    # every interpolation outside the hydra node resolves
    OmegaConf.to_container(cfg, resolve=True)
    kw = model_kwargs(cfg.model)
    assert kw["arch"] and kw["encoder"]


def test_all_groups_have_options():
    for g in GROUPS:
        assert _options(g), g
    assert len(_options("model/arch")) == 9
    assert {
        "resnet50",
        "resnext50_32x4d",
        "wide_resnet50_2",
        "efficientnet_b4",
        "resnet18",
        "mobilenet_v2",
        "efficientnet_lite0",
    } <= set(_options("model/encoder"))


@pytest.mark.parametrize("name", ["eval", "data_tool"])
def test_other_entry_configs_compose(name):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            name,
            overrides=["paths.output_dir=/tmp/x"]
            + (["ckpt_path=a.ckpt"] if name == "eval" else []),
        )
    assert cfg.paths.root_dir


def test_default_seed_and_seg_weight_convention():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["seed=0", "loss.seg_weight=0.3"])
    assert cfg.seed == 0 and cfg.loss.seg_weight == 0.3

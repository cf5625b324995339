"""Every config group option composes; experiment and debug configs compose with train.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from medmtl.config import CONFIG_DIR
from medmtl.config import compose as compose_config
from medmtl.workflows.build import model_kwargs

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
        # where the data is, for the data sets that have no default location
        where = {"folder": ["data.root=/x"], "manifest": ["data.manifest=/x.csv"]}.get(
            option if group == "data" else "", []
        )
        cfg = compose("train", overrides=[f"{group}={option}", *where, "paths.output_dir=/tmp/x"])
    # every interpolation outside the hydra node resolves
    OmegaConf.to_container(cfg, resolve=True)
    kw = model_kwargs(cfg.model)
    assert kw.arch and kw.encoder


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


def test_loss_defaults_live_in_the_schema_alone():
    """The composed config, the loss built without settings and a checkpoint missing a key all
    take the schema's defaults; the schema checks type and range, composing refuses a new key."""
    from medmtl.errors import ConfigError
    from medmtl.settings import LossSettings
    from medmtl.training.losses import MultiTaskLoss

    cfg = compose_config("train")
    assert OmegaConf.to_container(cfg.loss) == LossSettings().to_dict()
    assert cfg.loss.seg_weight == MultiTaskLoss().seg_weight == LossSettings().seg_weight
    assert MultiTaskLoss(presence_weight=0.2).deep_supervision_weight == 0.5  # the schema's
    assert compose_config("train", ["loss=uncertainty"]).loss.weighting == "uncertainty"
    with pytest.raises(ConfigCompositionException, match="seg_wieght"):
        compose_config("train", ["loss.seg_wieght=0.5"])
    for bad in ("abc", 1.5, True):
        with pytest.raises(ConfigError, match=f"loss.seg_weight={bad}: λ must be a number in"):
            LossSettings.from_dict({"seg_weight": bad})
    with pytest.raises(ConfigError, match="unknown setting.*seg_wieght"):
        LossSettings.from_dict({"seg_wieght": 0.5})


def test_one_output_root_moves_runs_sweeps_caches_and_split_files(monkeypatch):
    from medmtl.config import compose as compose_config
    from medmtl.config import project_root

    monkeypatch.delenv("MEDMTL_CACHE_DIR", raising=False)
    for how in ("setting", "environment"):
        if how == "environment":
            monkeypatch.setenv("MEDMTL_OUTPUT", "/scratch/me")
            extra = []
        else:
            monkeypatch.delenv("MEDMTL_OUTPUT", raising=False)
            extra = ["paths.output_root=/scratch/me"]
        cfg = compose_config(
            "train",
            ["data=folder", "data.root=/d", "data.name=mine", *extra],
            return_hydra_config=True,
        )
        assert str(cfg.hydra.run.dir).startswith("/scratch/me/outputs/train/"), how
        assert str(cfg.hydra.sweep.dir).startswith("/scratch/me/multirun/train/"), how
        assert cfg.paths.cache_dir == "/scratch/me/.cache", how
        assert cfg.data.split_file == "/scratch/me/outputs/splits/mine.json", how
        assert cfg.paths.root_dir == str(project_root())  # the configs do not move
    # by default a generated split file stays out of the repository's committed splits/
    monkeypatch.delenv("MEDMTL_OUTPUT")
    cfg = compose_config("train", ["data=folder", "data.root=/d", "data.name=mine"])
    assert cfg.data.split_file == str(project_root() / "outputs" / "splits" / "mine.json")
    busi = compose_config("train", ["data=busi", "paths.output_root=/scratch/me"])
    assert busi.data.split_file == str(project_root() / "splits" / "busi.json")  # committed


def test_split_file_advice_commits_only_the_repository_s_own(tmp_path):
    from medmtl.config import project_root
    from medmtl.data.datamodule import split_file_advice

    assert "commit it" in split_file_advice(project_root() / "splits" / "busi.json")
    other = split_file_advice(tmp_path / ".cache" / "phantom" / "split.json")
    assert "commit" not in other and "keep it" in other


@pytest.mark.parametrize("data", ["busi", "busbra", "folder", "manifest", "multi", "phantom"])
def test_every_data_key_is_described_once_in_the_schema(data):
    """Each data set's config holds the schema's defaults for what it does not set, and no key
    the schema does not know; the key lists the code uses come from the schema."""
    from medmtl.data.datamodule import DATA_KEYS, PREPROCESS_KEYS
    from medmtl.settings.data import keys, schema_defaults
    from medmtl.workflows.members import EVAL_DATA_KEYS

    d = OmegaConf.to_container(compose_config("train", [f"data={data}"]).data)
    assert set(d) <= set(keys())
    own = OmegaConf.to_container(OmegaConf.load(CONF / "data" / f"{data}.yaml"))
    for key, default in schema_defaults().items():
        if key not in own:
            assert d[key] == default, key
    for sub in (d.get("sets") or {}).values():  # data=multi's data sets start from it too
        assert set(sub) <= set(keys()) and sub["dedup"] == schema_defaults()["dedup"]
    assert keys("preprocess") == PREPROCESS_KEYS and "image_size" in PREPROCESS_KEYS
    assert set(keys()) - {"sets", "leave_out", "set_sampling"} == DATA_KEYS
    assert set(EVAL_DATA_KEYS) >= {"image_size", "classes", "split_file", "leave_out"}
    assert not set(EVAL_DATA_KEYS) & {"batch_size", "augment", "fold", "root", "cache_dir"}


def test_data_defaults_are_the_schemas():
    from medmtl.data.datamodule import LoaderSettings
    from medmtl.data.splits import SplitSettings
    from medmtl.data.transforms import train_transform
    from medmtl.errors import ConfigError
    from medmtl.preprocess.pipeline import PreprocessSettings
    from medmtl.settings.data import DATA
    from medmtl.training.progressive import ProgressiveResize

    assert PreprocessSettings().image_size == DATA.image_size == 160
    assert PreprocessSettings.from_dict({}) == PreprocessSettings()
    assert PreprocessSettings().conversion == DATA.conversion
    assert LoaderSettings.from_dict({}).batch_size == DATA.batch_size
    assert SplitSettings().seed == DATA.split.seed and SplitSettings().thumb_size == 32
    assert ProgressiveResize.from_data({}).final_size == DATA.image_size
    with pytest.raises(ConfigError, match="data.augment: unknown setting.*hflipp"):
        train_transform(64, hflipp=0.5)


def test_model_configs_and_the_registry_agree():
    """Every architecture and encoder file is in the registry and the reverse; the checks, the
    deep-supervision list and the study's table names come from the registry."""
    from medmtl.models.deep_supervision import DEEP_SUPERVISION_ARCHS
    from medmtl.models.multitask import ARCHITECTURES, NO_TRANSFORMER
    from medmtl.models.registry import ARCHS, ENCODERS, architecture, encoder
    from medmtl.reporting.study import ARCH_NAMES, STUDY_ARCHS, STUDY_BACKBONES

    arch_files = {p.stem: OmegaConf.load(p).name for p in (CONF / "model" / "arch").glob("*.yaml")}
    assert arch_files == {a.config: a.name for a in ARCHS}
    enc_files = {
        p.stem: OmegaConf.load(p).name for p in (CONF / "model" / "encoder").glob("*.yaml")
    }
    assert enc_files == {e.config: e.name for e in ENCODERS}
    assert tuple(a.name for a in ARCHS) == ARCHITECTURES
    assert set(NO_TRANSFORMER) == {"UnetPlusPlus", "Linknet"}
    assert set(DEEP_SUPERVISION_ARCHS) == {"Unet", "UnetPlusPlus", "MAnet", "Linknet"}
    assert ARCH_NAMES["unetplusplus"] == "Unet++" and architecture("Unett") is None
    assert architecture("UnetPlusPlus").display == "Unet++"
    assert STUDY_ARCHS == ["unet", "unetplusplus", "fpn", "deeplabv3plus"]
    assert STUDY_BACKBONES == ["resnet50", "resnext50_32x4d", "wide_resnet50_2", "efficientnet_b4"]
    assert encoder("wide_resnet50_2").name == "tu-wide_resnet50_2"
    assert architecture("PAN").min_size == 128


def test_an_architecture_below_its_smallest_input_is_refused(tmp_path, cache_dir):
    from medmtl.errors import ConfigError
    from medmtl.workflows.build import check_train_config
    from tests.conftest import compose_cfg

    cfg = compose_cfg(["model/arch=pan", "data.image_size=96"], tmp_path / "run", cache_dir)
    with pytest.raises(ConfigError, match=r"PAN needs data.image_size >= 128 \(got 96\)"):
        check_train_config(cfg)


def test_gpu_profile_takes_its_loader_workers_from_the_job(monkeypatch):
    """profile=gpu: one loader worker per CPU of the job less one, resolved where it runs."""
    import os

    from medmtl.config import job_workers

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")
    assert job_workers() == 15
    assert compose_config("train", ["profile=gpu"]).data.num_workers == 15
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert job_workers() == 0
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert job_workers() == len(os.sched_getaffinity(0)) - 1
    cfg = compose_config("train", ["profile=gpu"])
    assert cfg.data.pin_memory is True and cfg.trainer.precision == "auto"
    assert cfg.trainer.benchmark is True

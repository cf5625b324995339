"""Every option of medmtl-train's and medmtl-data's config groups (data, loss, model, optimizer,
and the run's own keys), fed the faults of its kind: a wrong type, a value outside its range
and a word outside its choices. Each is refused in one line naming the key, on the composed
config, before Hydra makes the run's folder. The options are enumerated from the schemas, so a
new setting is tried too."""

from __future__ import annotations

import copy
import re
import sys
from dataclasses import fields, is_dataclass
from types import UnionType
from typing import Union, get_args, get_origin, get_type_hints

import pytest
from omegaconf import OmegaConf

from medmtl.config import compose
from medmtl.errors import ConfigError
from medmtl.settings.data import DataSettings
from medmtl.settings.loss import LossSettings
from medmtl.settings.model import NORMS, TASKS, ModelSettings, PostProcessSettings
from medmtl.settings.optimizer import OptimizerSettings
from medmtl.settings.train import TrainSettings
from tests.conftest import refused

GROUPS = {"data": DataSettings, "loss": LossSettings, "model": ModelSettings,
          "optimizer": OptimizerSettings}  # fmt: skip
# words whose values are checked beside the schema (the network's own check; the registry of
# data sources); the other words name their choices in the field
CHOICES = {"model.task": TASKS, "model.norm": NORMS, "data.source": ("folder",)}
# free text, paths and names checked where they are used (the data set's own check of its
# folder, the class names against the data, the optimizer class when it is built)
FREE = {"data.name", "data.root", "data.manifest", "data.split_file", "data.cache_dir",
        "data.leave_out", "model.empty_mask_class", "optimizer._target_",
        "data.conversion.center", "task_name", "ckpt_path", "optimized_metric",
        "distill.teacher", "data.image_list", "init_from"}  # fmt: skip
# beyond the schemas' own bounds: the trainer's epochs, upper bounds checked in code, and the
# model's nested names
EXTRA = [
    ("trainer.max_epochs", "many", "wrong type"),
    ("trainer.max_epochs", "0", "out of range"),
    ("conformal.alpha", "1.5", "out of range"),
    ("unlike.quantile", "1.5", "out of range"),
    ("distill.weight", "1.5", "out of range"),
    ("model.arch.name", "NoSuchNet", "not one of the choices"),
    ("model.encoder.name", "no-such-encoder", "not one of the choices"),
    ("model.encoder.weights", "no-such-weights", "not one of the choices"),
    ("model.postprocess.min_area", "-7", "out of range"),
    ("model.postprocess.fill_holes", "maybe", "wrong type"),
    ("data.image_list", "/no/such/list.csv", "missing file"),
]


def _kind(annotation):
    kinds = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    return next(k for k in kinds if k is not type(None))


def _faults(prefix: str, cls: type) -> list[tuple[str, str, str]]:
    """(key, bad value, kind of fault) for every field of ``cls`` (nested settings too)."""
    out = []
    hints = get_type_hints(cls)
    for f in fields(cls):
        name = f.metadata.get("key", f.name)
        key = f"{prefix}.{name}" if prefix else name  # no prefix: the run's own keys
        kind = _kind(hints[f.name])
        if key in FREE:
            continue
        if is_dataclass(kind):
            out += _faults(key, kind)
        elif kind is bool:
            out.append((key, "maybe", "wrong type"))
        elif kind in (int, float):
            out.append((key, "many", "wrong type"))
            low, high = f.metadata.get("low"), f.metadata.get("high")
            if high is not None:
                out.append((key, str(high + 1), "out of range"))
            elif low is not None or prefix not in ("data", ""):  # loss, model...: >= 0
                out.append((key, str((low or 0) - 1), "out of range"))
        elif kind is str:
            if key not in CHOICES and not f.metadata.get("choices"):
                raise AssertionError(f"{key}: a word without choices; add it to FREE or CHOICES")
            out.append((key, "no-such-choice", "not one of the choices"))
        elif (get_origin(kind) or kind) in (list, dict):  # a list or a group, not a word
            out.append((key, "abc", "wrong type"))
    return out


# the run's own keys (conf/train.yaml's top level: seed, tta, conformal, distill...)
RUN = _faults("", TrainSettings)
CASES = [c for group, cls in GROUPS.items() for c in _faults(group, cls)] + RUN + EXTRA
# data.sets (data=multi) holds whole data configs: one case shows they are checked the same way
CASES.append(("data.sets.busi.batch_size", "0", "out of range"))


def test_the_enumeration_covers_every_group():
    assert {key.split(".")[0] for key, *_ in CASES} >= set(GROUPS) | {"trainer", "conformal"}
    # every run setting with a type to get wrong: from the schema, none listed by hand
    run_keys = {k for k, *_ in RUN}
    assert {"seed", "test", "threads", "tta", "channels_last", "tags", "calibration.temperature",
            "conformal.alpha", "conformal.by_class", "unlike.quantile", "distill.weight",
            "distill.temperature"} <= run_keys, run_keys  # fmt: skip
    assert any(k.startswith("data.augment.") for k, *_ in CASES)  # nested settings enumerated
    assert {f.name for f in fields(PostProcessSettings)} <= {
        k.rsplit(".", 1)[-1] for k, *_ in CASES if k.startswith("model.postprocess")
    } | {"largest_component"}
    assert len(CASES) > 100, len(CASES)


@pytest.fixture(scope="module")
def composed():
    """The demo's and data=multi's composed configs, as the command line would see them."""
    return {
        "train": compose("train", ["experiment=demo"], return_hydra_config=True),
        "multi": compose("train", ["experiment=demo", "data=multi"], return_hydra_config=True),
    }


def test_the_base_configs_pass(composed, busi, busbra_real):
    """The whole check, the machine's part too: BUSI's and BUS-BRA's folders are there."""
    from medmtl.cli.train import _check

    for cfg in composed.values():
        _check(cfg)


@pytest.mark.parametrize(
    "key, value, fault", CASES, ids=[f"{k}-{f.replace(' ', '_')}" for k, _, f in CASES]
)
def test_every_train_setting_refuses_its_faults(key, value, fault, composed):
    from medmtl.cli.train import _check

    cfg = copy.deepcopy(composed["multi" if key.startswith("data.sets.") else "train"])
    OmegaConf.set_struct(cfg, False)  # a value of another type than the schema's default
    OmegaConf.update(cfg, key, OmegaConf.from_dotlist([f"v={value}"]).v, merge=False)
    with pytest.raises(ConfigError) as err:
        _check(cfg)
    assert re.search(rf"(?<![\w.]){re.escape(key)}\b", str(err.value)), (fault, str(err.value))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "command, args, says",
    [
        ("train", ["experiment=demo", "data.augment.hflip=maybe"], "data.augment.hflip=maybe"),
        ("train", ["experiment=demo", "data.fold=abc"], "data.fold=abc"),
        ("train", ["-m", "experiment=demo", "optimizer.lr=-1,0.1"], "optimizer.lr"),
        ("data", ["audit", "data=busi", "data.batch_size=0"], "data.batch_size=0"),
        ("data", ["split", "data=multi", "data.sets.busi.fold=-1"], "data.sets.busi.fold=-1"),
        # the paths a run starts from: the data folder, a teacher, the model to evaluate
        (
            "train",
            ["experiment=demo", "data=folder", "data.root=/nonexistent/x"],
            "/nonexistent/x: data folder not found",
        ),
        (
            "train",
            ["experiment=demo", "distill.teacher=/nonexistent/ens"],
            "/nonexistent/ens: not found",
        ),
        (
            "data",
            ["audit", "data=busbra", "data.root=/nonexistent/b"],
            "/nonexistent/b: BUS-BRA folder not found",
        ),
        ("train", ["experiment=demo", "init_from=/nonexistent/run"], "/nonexistent/run: not found"),
        ("eval", ["ckpt_path=/nonexistent/m.ckpt"], "/nonexistent/m.ckpt: checkpoint not found"),
        ("eval", ["ckpt_path=/nonexistent/run"], "/nonexistent/run: not found"),
        ("eval", ["split=test"], "Missing mandatory value: ckpt_path"),
    ],
)
def test_the_commands_refuse_before_hydra_writes_anything(
    command, args, says, tmp_path, monkeypatch, capsys
):
    import importlib

    run_dir = tmp_path / "run"
    argv = [*args, f"hydra.run.dir={run_dir}", f"hydra.sweep.dir={run_dir}"]
    monkeypatch.setattr(sys, "argv", [f"medmtl-{command}", *argv])
    assert says in refused(importlib.import_module(f"medmtl.cli.{command}").main, capsys)
    assert not run_dir.exists()  # not even Hydra's folder

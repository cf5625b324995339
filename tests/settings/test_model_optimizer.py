"""The model and optimizer groups: one place for each default and check, and the YAML files
keep only what differs."""

from __future__ import annotations

import pytest

from medmtl.config import compose
from medmtl.errors import ConfigError
from medmtl.models.upgrade import MODEL_ADDED
from medmtl.settings.model import ModelSettings
from medmtl.settings.optimizer import OptimizerSettings
from medmtl.workflows.build import model_kwargs


def test_the_composed_model_group_is_the_schema_with_the_chosen_parts():
    cfg = compose("train")
    defaults = ModelSettings().to_dict()
    model = {k: v for k, v in dict(cfg.model).items() if k not in ("arch", "encoder")}
    assert {k: defaults[k] for k in model} == {
        k: (dict(v) if hasattr(v, "items") else v) for k, v in model.items()
    }
    assert cfg.model.arch.name == "Unet" and cfg.model.encoder.name == "tu-efficientnet_lite0"


def test_network_arguments_take_every_default_from_the_schema():
    kw = model_kwargs({"arch": {"name": "Unet"}, "encoder": {"name": "resnet18"}})
    defaults = ModelSettings()
    for key in ("task", "cls_hidden", "cls_dropout", "norm", "mask_threshold", "postprocess"):
        assert getattr(kw, key) == getattr(defaults, key), key
    # an older checkpoint gets a setting added since with the schema's default
    assert all(MODEL_ADDED[k] == getattr(defaults, k) for k in MODEL_ADDED)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"task": "detect"}, "model.task='detect' is unknown"),
        ({"norm": "layer"}, "model.norm='layer' is unknown"),
        ({"cls_dropout": 1.5}, "model.cls_dropout=1.5"),
        ({"mask_threshold": 1.0}, "model.mask_threshold=1.0"),
        ({"empty_mask_min_prob": "x"}, "model.empty_mask_min_prob=x: a probability"),
        ({"postprocess": {"largest": True}}, "model.postprocess: unknown setting"),
        ({"postprocess": {"min_area": -1}}, "model.postprocess.min_area=-1"),
        ({"depth": 3}, "model: unknown setting"),
    ],
)
def test_a_wrong_model_setting_is_one_line(values, message):
    with pytest.raises(ConfigError, match=message):
        ModelSettings.from_dict(values)


def test_optimizer_files_share_the_schema_and_keep_their_own_arguments():
    sgd = compose("train", ["optimizer=sgd"]).optimizer
    adam = compose("train", ["optimizer=adam"]).optimizer
    assert adam.lr == OptimizerSettings().lr and adam._partial_ is True
    assert sgd.lr == 1.0e-2 and sgd.momentum == 0.9  # its own arguments pass through
    assert OptimizerSettings.check(dict(sgd)) == dict(sgd)
    for bad, message in [({"lr": 0}, "optimizer.lr=0"), ({"weight_decay": -1}, "weight_decay")]:
        with pytest.raises(ConfigError, match=message):
            OptimizerSettings.check({"_target_": "torch.optim.SGD", **bad})

"""The network's settings are parsed once and carried as one typed object: through the
LightningModule, its checkpoint and an ONNX export, and back from a checkpoint written before
some of them existed."""

from __future__ import annotations

import pytest
import torch

from medmtl.errors import MedmtlError
from medmtl.models.checkpoint import load_checkpoint, stored_net
from medmtl.models.upgrade import MODEL_ADDED
from medmtl.settings.model import NetSettings
from medmtl.training.module import MultiTaskModule


def test_the_settings_round_trip_through_the_checkpoint_and_onnx(tiny_ckpt, tmp_path):
    from medmtl.inference.export import export_onnx
    from medmtl.inference.onnx_backend import OnnxBackend

    module, ckpt = MultiTaskModule.from_checkpoint(tiny_ckpt)
    net = stored_net(ckpt["hyper_parameters"])
    assert isinstance(module.net_settings, NetSettings) and module.net_settings == net
    assert NetSettings.from_dict(net.to_dict()) == net
    # what the network was built from is what the settings say
    assert (module.net.arch, module.net.encoder_name, module.net.norm) == (
        net.arch,
        net.encoder,
        net.norm,
    )
    assert module.net.gate.mask_threshold == net.mask_threshold
    assert module.postprocess.to_dict() == net.postprocess
    onnx = OnnxBackend(export_onnx(tiny_ckpt, tmp_path / "model.onnx"))
    assert NetSettings.from_dict(onnx.meta["model"]) == net


def test_a_checkpoint_from_before_the_added_settings_loads_with_their_defaults(tiny_ckpt, tmp_path):
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    for key in MODEL_ADDED:
        hp["model"].pop(key)
    hp["optimizer"] = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0}  # before _target_
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    module, _ = MultiTaskModule.from_checkpoint(old)
    for key, value in MODEL_ADDED.items():
        assert getattr(module.net_settings, key) == value, key
    assert module.hparams["optimizer"]["_target_"] == "torch.optim.AdamW"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": "blue"}, r"unknown setting\(s\) colour"),
        ({"task": "detect"}, "model.task='detect' is unknown"),
        ({"in_channels": 0}, "model.in_channels=0"),
    ],
)
def test_a_checkpoint_with_settings_medmtl_does_not_know_is_one_line(
    tiny_ckpt, tmp_path, change, message
):
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["model"].update(change)
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(MedmtlError, match=rf"{bad}: its model settings .*{message}"):
        load_checkpoint(bad)


def test_the_gate_is_one_object_changed_only_through_its_check(tiny_ckpt):
    from dataclasses import FrozenInstanceError

    from medmtl.errors import ConfigError

    module, _ = MultiTaskModule.from_checkpoint(tiny_ckpt)
    gate = module.net.gate
    with pytest.raises(FrozenInstanceError):
        gate.mask_threshold = 0.3  # type: ignore[misc]
    module.configure_evaluation(gate={"mask_threshold": 0.3, "empty_mask_min_prob": 0.6})
    assert (module.net.gate.mask_threshold, module.net.gate.empty_mask_min_prob) == (0.3, 0.6)
    assert gate.mask_threshold == module.net_settings.mask_threshold  # the old one unchanged
    with pytest.raises(ConfigError, match="gate=.colour. is unknown"):
        module.configure_evaluation(gate={"colour": 1})

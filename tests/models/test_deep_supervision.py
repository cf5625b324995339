"""Deep supervision (model.deep_supervision): mask heads on the decoder's stages, in training only."""

from __future__ import annotations

import pytest
import torch

from medmtl.errors import ConfigError
from medmtl.models.adapt import batchnorm_layers
from medmtl.models.multitask import MultiTaskNet
from medmtl.training.losses import MultiTaskLoss

DEC = {"decoder_channels": [32, 16, 16, 8, 8]}


def _net(arch: str = "Unet", deep: bool = True) -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet(arch, "resnet18", in_channels=1, num_classes=3, arch_kwargs=DEC,
                        deep_supervision=deep)  # fmt: skip


@pytest.mark.parametrize(("arch", "stages"), [("Unet", 4), ("UnetPlusPlus", 3)])
def test_stage_masks_in_training_only_and_the_plain_network_in_evaluation(arch, stages):
    net = _net(arch)
    x = torch.randn(2, 1, 64, 64)
    out = net.train()(x)
    assert out["seg_aux"].shape == (stages, 2, 1, 64, 64)
    # the stages see other features than the output: their maps differ from it
    assert not torch.allclose(out["seg_aux"][-1], out["seg"])
    plain = _net(arch, deep=False)
    missing, unexpected = plain.load_state_dict(net.state_dict(), strict=False)
    assert not missing and unexpected and all("deep_supervision" in k for k in unexpected)
    net.eval(), plain.eval()
    with torch.no_grad():
        got, want = net(x), plain(x)
    assert "seg_aux" not in got
    assert torch.equal(got["seg"], want["seg"]) and torch.equal(got["cls"], want["cls"])


def test_building_the_heads_leaves_the_encoder_statistics_alone():
    plain, deep = _net(deep=False), _net()
    pairs = list(zip(batchnorm_layers(plain), batchnorm_layers(deep), strict=True))
    assert len(pairs) > 10, len(pairs)  # the encoder's batch norms, not an empty walk
    for a, b in pairs:
        assert torch.equal(a.running_mean, b.running_mean)
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == 0


def test_the_stage_loss_is_weighted_in_and_trains_the_heads():
    net = _net().train()
    x, mask = torch.randn(2, 1, 64, 64), (torch.rand(2, 1, 64, 64) > 0.7).float()
    label = torch.tensor([1, 2])
    out = net(x)
    on = MultiTaskLoss(seg_weight=0.7, deep_supervision_weight=0.5)(out, mask, label)
    off = MultiTaskLoss(seg_weight=0.7, deep_supervision_weight=0.0)(out, mask, label)
    assert "loss_deep" not in off and on["loss_deep"] > 0
    assert torch.allclose(on["loss"], off["loss"] + 0.5 * on["loss_deep"])
    on["loss"].backward()
    head = net.deep_supervision.heads[0]
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("arch", "task", "match"),
    [("FPN", "multitask", "FPN has none"), ("Unet", "cls", "needs a mask decoder")],
)
def test_refused_where_there_are_no_stages(arch, task, match):
    with pytest.raises(ConfigError, match=match):
        MultiTaskNet(arch, "resnet18", task=task, deep_supervision=True)

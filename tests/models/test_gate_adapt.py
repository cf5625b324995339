"""The classification gate's thresholds and test-time batch-norm adaptation (AdaBN)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmtl.models.adapt import adapt_batchnorm, batchnorm_layers
from medmtl.models.multitask import EMPTY_LOGIT, MultiTaskNet, gate_masks
from medmtl.workflows.gate import GateEvidence, tune_gate


def test_gate_thresholds_on_constructed_outputs():
    # class probabilities (normal, benign, malignant) and mask maxima of four images
    prob = torch.tensor([[0.9, 0.05, 0.05], [0.55, 0.4, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    cls = torch.log(prob)
    seg = torch.full((4, 1, 2, 2), -3.0)
    seg[2, 0, 0, 0] = 3.0  # image 2: a confident mask pixel (sigmoid 0.95)
    seg[1, 0, 0, 0] = 0.5  # image 1: a weak one (0.62)

    def emptied(**kw) -> list[bool]:
        out = gate_masks(seg, cls, 0, **kw)
        return [bool((out[i] == EMPTY_LOGIT).all()) for i in range(4)]

    assert emptied() == [True, True, True, False]  # the arg-max rule
    assert emptied(min_prob=0.58) == [True, False, True, False]
    assert emptied(keep_above=0.9) == [True, True, False, False]
    assert emptied(min_prob=0.58, keep_above=0.9) == [True, False, False, False]
    net = MultiTaskNet("Unet", "resnet18", in_channels=1, num_classes=3, empty_mask_index=0,
                       empty_mask_min_prob=0.58, arch_kwargs={"decoder_channels": [16, 8, 8, 8, 8]})  # fmt: skip
    assert net.empty_mask_min_prob == 0.58 and net.empty_mask_keep_above is None


def test_tune_gate_picks_the_best_out_of_fold_dice():
    # two lesion images called normal with P(normal) 0.55 / 0.65 and good masks (Dice 0.8),
    # two normal images called normal with P 0.95 and a confident false mask (max 0.97), one
    # lesion image called benign
    ev = GateEvidence(
        p_gate=np.array([0.55, 0.65, 0.95, 0.95, 0.1]),
        called=np.array([True, True, True, True, False]),
        mask_max=np.array([0.9, 0.9, 0.97, 0.97, 0.9]),
        dice=np.array([0.8, 0.8, 0.0, 0.0, 0.7]),
        lesion=np.array([True, True, False, False, True]),
    )
    plain = ev.score(0.0, None)
    assert plain["seg_dice"] == pytest.approx((0 + 0 + 1 + 1 + 0.7) / 5)
    assert plain["empty_lesion_rate"] == pytest.approx(2 / 3)
    out = tune_gate(ev)
    assert out["empty_mask_min_prob"] == 0.7  # the first floor above both lesions' 0.55/0.65
    assert out["empty_mask_keep_above"] is None
    assert out["chosen"]["seg_dice"] == pytest.approx((0.8 + 0.8 + 1 + 1 + 0.7) / 5)
    assert out["chosen"]["empty_lesion_rate"] == 0 and out["chosen"]["normal_fp_rate"] == 0
    assert out["plain"] == {"min_prob": 0.0, "keep_above": None, **plain}


def _tiny_net() -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet("Unet", "resnet18", in_channels=1, num_classes=3,
                        arch_kwargs={"decoder_channels": [16, 8, 8, 8, 8]}).eval()  # fmt: skip


def test_adabn_changes_only_the_normalisation_statistics():
    net = _tiny_net()
    g = torch.Generator().manual_seed(1)
    source = [torch.randn(8, 1, 64, 64, generator=g) for _ in range(4)]
    adapt_batchnorm(net, source)  # statistics of the "training" distribution
    weights = {k: v.clone() for k, v in net.named_parameters()}
    stats = {k: v.clone() for k, v in net.named_buffers() if "running" in k}
    probe = torch.randn(6, 1, 64, 64, generator=g)
    with torch.no_grad():
        before = torch.softmax(net(probe)["cls"], 1)
    # other images of the same distribution: statistics move a little, predictions stay close
    same = [torch.randn(8, 1, 64, 64, generator=g) for _ in range(4)]
    assert adapt_batchnorm(net, same) == 32
    with torch.no_grad():
        close = torch.softmax(net(probe)["cls"], 1)
    assert torch.allclose(before, close, atol=0.05)
    # another "scanner": brighter and with more contrast -> other statistics, same weights
    shifted = [2.0 * x + 1.0 for x in same]
    adapt_batchnorm(net, shifted)
    for k, v in net.named_parameters():
        assert torch.equal(v, weights[k]), k
    moved = {k: v for k, v in net.named_buffers() if "running" in k}
    assert any(not torch.allclose(moved[k], stats[k], atol=1e-3) for k in stats)
    assert not net.training and all(not m.training for m in batchnorm_layers(net))
    assert all(m.momentum == 0.1 for m in batchnorm_layers(net))  # restored

"""The classification gate's thresholds and test-time batch-norm adaptation (AdaBN)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medmtl.errors import ConfigError
from medmtl.models.adapt import adapt_batchnorm, batchnorm_layers
from medmtl.models.multitask import EMPTY_LOGIT, Gate, MultiTaskNet, gate_masks
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
    assert net.gate.empty_mask_min_prob == 0.58 and net.gate.empty_mask_keep_above is None


def test_tune_gate_picks_the_best_out_of_fold_dice():
    # two lesion images called normal with P(normal) 0.55 / 0.65 and good masks (Dice 0.8),
    # two normal images called normal with P 0.95 and a confident false mask (max 0.97), one
    # lesion image called benign
    ev = GateEvidence(
        p_gate=np.array([0.55, 0.65, 0.95, 0.95, 0.1]),
        called=np.array([True, True, True, True, False]),
        mask_max=np.array([0.9, 0.9, 0.97, 0.97, 0.9]),
        dice=np.array([[0.8], [0.8], [0.0], [0.0], [0.7]]),
        empty=np.zeros((5, 1), dtype=bool),
        lesion=np.array([True, True, False, False, True]),
        thresholds=(0.5,),
    )
    plain = ev.score(0.0, None)
    assert plain["seg_dice"] == pytest.approx((0 + 0 + 1 + 1 + 0.7) / 5)
    assert plain["empty_lesion_rate"] == pytest.approx(2 / 3)
    out = tune_gate(ev)
    assert out["empty_mask_min_prob"] == 0.7  # the first floor above both lesions' 0.55/0.65
    assert out["empty_mask_keep_above"] is None and out["mask_threshold"] == 0.5
    assert out["chosen"]["seg_dice"] == pytest.approx((0.8 + 0.8 + 1 + 1 + 0.7) / 5)
    assert out["chosen"]["empty_lesion_rate"] == 0 and out["chosen"]["normal_fp_rate"] == 0
    assert out["plain"] == {"mask_threshold": 0.5, "min_prob": 0.0, "keep_above": None, **plain}


def test_tune_gate_chooses_the_mask_threshold_that_finds_faint_lesions():
    # three lesion images: at 0.5 two masks are empty (maxima 0.45 / 0.35), at 0.3 all three
    # have a mask; a normal image gets a false mask below 0.3 only (max 0.25)
    ev = GateEvidence(
        p_gate=np.array([0.1, 0.1, 0.1, 0.2]),
        called=np.zeros(4, dtype=bool),
        mask_max=np.array([0.9, 0.45, 0.35, 0.25]),
        # columns: thresholds 0.5, 0.3, 0.2
        dice=np.array([[0.9, 0.85, 0.8], [0.0, 0.7, 0.7], [0.0, 0.6, 0.6], [1.0, 1.0, 0.0]]),
        empty=np.array([[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0]], dtype=bool),
        lesion=np.array([True, True, True, False]),
        thresholds=(0.5, 0.3, 0.2),
    )
    at_half = ev.score(0.0, None, 0.5)
    assert at_half["empty_lesion_rate"] == pytest.approx(2 / 3)
    assert ev.score(0.0, None, 0.2)["normal_fp_rate"] == 1.0
    out = tune_gate(ev)
    assert out["mask_threshold"] == 0.3
    assert out["chosen"]["empty_lesion_rate"] == 0 and out["chosen"]["normal_fp_rate"] == 0
    assert out["chosen"]["seg_dice"] == pytest.approx((0.85 + 0.7 + 0.6 + 1) / 4)
    with pytest.raises(ValueError):  # only the evidence's own thresholds can be scored
        ev.score(0.0, None, 0.4)


def test_tune_gate_never_trades_a_lesion_for_a_clean_normal_image():
    # a higher mask threshold cleans the false masks of two normal images but loses a faint
    # lesion: the best all-image Dice, yet one more lesion image left empty than the plain 0.5
    ev = GateEvidence(
        p_gate=np.full(4, 0.1),
        called=np.zeros(4, dtype=bool),
        mask_max=np.array([0.9, 0.55, 0.58, 0.58]),
        # columns: thresholds 0.5, 0.6
        dice=np.array([[0.8, 0.8], [0.5, 0.0], [0.0, 1.0], [0.0, 1.0]]),
        empty=np.array([[0, 0], [0, 1], [0, 1], [0, 1]], dtype=bool),
        lesion=np.array([True, True, False, False]),
        thresholds=(0.5, 0.6),
    )
    assert ev.score(0.0, None, 0.6)["seg_dice"] > ev.score(0.0, None, 0.5)["seg_dice"]
    assert ev.score(0.0, None, 0.6)["empty_lesion_rate"] == 0.5
    out = tune_gate(ev)
    assert out["mask_threshold"] == 0.5
    assert out["chosen"]["empty_lesion_rate"] == 0.0
    assert "no more lesion images left empty" in out["rule"]
    # validation images without a lesion: the all-image Dice alone decides
    normal_only = GateEvidence(
        p_gate=ev.p_gate[2:], called=ev.called[2:], mask_max=ev.mask_max[2:],
        dice=ev.dice[2:], empty=ev.empty[2:], lesion=ev.lesion[2:], thresholds=(0.5, 0.6),
    )  # fmt: skip
    assert tune_gate(normal_only)["mask_threshold"] == 0.6


def test_a_target_sensitivity_picks_the_fewest_normal_false_positives_that_reach_it(tmp_path):
    """Four lesion images (one lesion each, image 3 two) and two normal ones, thresholds 0.5 and
    0.2. The gate calls lesion image 1 normal at P 0.65; at 0.5 image 2's faint lesion is
    missed. Reaching 0.95 takes a floor above 0.65 (or a mask ceiling) and the 0.2 threshold,
    which costs one normal image a false mask: chosen, with its cost. The all-image Dice rule
    would keep 0.5 (no false masks), and a target no setting reaches gets the highest."""
    from medmtl.reporting.evaluation import gate_tradeoff_figure

    ev = GateEvidence(
        p_gate=np.array([0.1, 0.65, 0.2, 0.1, 0.9, 0.9]),
        called=np.array([False, True, False, False, True, False]),
        mask_max=np.array([0.9, 0.8, 0.3, 0.9, 0.1, 0.25]),
        # columns: thresholds 0.5, 0.2
        dice=np.array([[0.9, 0.85], [0.8, 0.8], [0.0, 0.5], [0.9, 0.9], [1.0, 1.0], [1.0, 0.0]]),
        empty=np.array([[0, 0], [0, 0], [1, 0], [0, 0], [1, 1], [1, 0]], dtype=bool),
        lesion=np.array([True, True, True, True, False, False]),
        thresholds=(0.5, 0.2),
        lesions=np.array([1.0, 1, 1, 2, 0, 0]),
        found=np.array([[1, 1], [1, 1], [0, 1], [2, 2], [0, 0], [0, 0]], dtype=float),
    )
    plain = ev.score(0.0, None, 0.5)
    assert plain["lesion_sensitivity"] == pytest.approx(3 / 5)  # image 1 gated, image 2 missed
    out = tune_gate(ev, target_sensitivity=0.95)
    assert out["reached"] is True and out["target_sensitivity"] == 0.95
    assert out["mask_threshold"] == 0.2
    assert out["chosen"]["lesion_sensitivity"] == 1.0
    assert out["chosen"]["normal_fp_rate"] == 0.5  # the cost: one of the two normal images
    # the first such setting: the arg-max gate, kept off masks that reach 0.5 (image 1)
    assert out["empty_mask_min_prob"] == 0.0 and out["empty_mask_keep_above"] == 0.5
    assert "reaches 0.95" in out["rule"]
    assert tune_gate(ev)["mask_threshold"] == 0.5  # the Dice rule: fewer false masks
    # a lower target is met without the false mask: 0.5, the floor that keeps image 1
    low = tune_gate(ev, target_sensitivity=0.8)
    assert low["mask_threshold"] == 0.5 and low["chosen"]["normal_fp_rate"] == 0.0
    assert low["chosen"]["lesion_sensitivity"] == pytest.approx(4 / 5)
    missed = GateEvidence(
        **{**ev.__dict__, "found": np.minimum(ev.found, [[1, 1]] * 3 + [[1, 1]] * 3)}
    )
    none = tune_gate(missed, target_sensitivity=0.95)  # image 3's second lesion is never found
    assert none["reached"] is False and none["chosen"]["lesion_sensitivity"] == 0.8
    assert "no setting reaches" in none["rule"]
    fig = gate_tradeoff_figure(out)
    fig.savefig(tmp_path / "tradeoff.png")
    assert (tmp_path / "tradeoff.png").stat().st_size > 0
    with pytest.raises(ConfigError, match="target_sensitivity needs the lesions"):
        tune_gate(GateEvidence(**{**ev.__dict__, "found": None}), target_sensitivity=0.9)


def test_mask_threshold_recentres_the_map_in_evaluation_only():
    from medmtl.errors import ConfigError

    net = _tiny_net()
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        raw = torch.sigmoid(net(x)["seg"])
        net.gate = Gate(mask_threshold=0.3)
        shifted = torch.sigmoid(net(x)["seg"])
        net.train()
        trained = torch.sigmoid(net(x)["seg"])
    # 0.5 of the output is 0.3 of the network's own map; training sees the map itself
    assert torch.equal(shifted >= 0.5, raw >= 0.3)
    assert not torch.equal(raw >= 0.5, raw >= 0.3)  # the threshold matters on this map
    net.gate = Gate(mask_threshold=0.5)
    with torch.no_grad():
        assert torch.equal(trained, torch.sigmoid(net(x)["seg"]))  # training: no shift
    for bad in (0, 1, 1.5, "x"):
        with pytest.raises(ConfigError, match="model.mask_threshold"):
            MultiTaskNet("Unet", "resnet18", mask_threshold=bad)


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


@pytest.mark.parametrize("kind", ["group", "instance"])
def test_norm_option_replaces_every_batch_norm_and_keeps_the_pretrained_affine(kind):
    """model.norm=group|instance: no batch-norm layer (no stored statistics) is left in the
    Lite0 encoder or the decoder, the pretrained scales are kept, and each image is normalised
    by itself: its outputs do not depend on the other images of the batch."""
    from torch import nn

    from medmtl.errors import ConfigError
    from medmtl.models.norm import num_groups

    torch.manual_seed(0)
    plain = MultiTaskNet(encoder="tu-efficientnet_lite0", encoder_weights="lite0_offline")
    torch.manual_seed(0)
    net = MultiTaskNet(encoder="tu-efficientnet_lite0", encoder_weights="lite0_offline", norm=kind)
    assert not batchnorm_layers(net)
    groups = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert len(groups) == len(batchnorm_layers(plain)) > 20
    bn = batchnorm_layers(plain)[0]
    assert torch.equal(groups[0].weight, bn.weight) and torch.equal(groups[0].bias, bn.bias)
    for g in groups:
        expected = g.num_channels if kind == "instance" else num_groups(g.num_channels, kind)
        assert g.num_groups == expected and g.num_channels % g.num_groups == 0
    # the activation of timm's norm+act layers is kept (EfficientNet-Lite uses ReLU6)
    assert any(isinstance(getattr(g, "act", None), nn.ReLU6) for g in groups)
    net.eval()
    x = torch.randn(4, 1, 64, 64)
    with torch.no_grad():
        alone = net(x[:1])
        together = net(torch.cat([x[:1], 3 * x[1:] + 2]))
    assert torch.allclose(alone["seg"], together["seg"][:1], atol=1e-4)
    assert torch.allclose(alone["cls"], together["cls"][:1], atol=1e-4)
    with pytest.raises(ConfigError, match="no batch-norm layer to adapt"):
        adapt_batchnorm(net, [x])
    with pytest.raises(ConfigError, match="model.norm='layer'"):
        MultiTaskNet(encoder="resnet18", norm="layer")


def test_group_counts_divide_the_channels():
    from medmtl.models.norm import num_groups

    assert [num_groups(c, "group") for c in (16, 24, 40, 64, 112, 320)] == [8, 12, 20, 32, 28, 32]
    assert num_groups(40, "instance") == 40


def test_norm_setting_reaches_the_network():
    """model.norm from the config is a MultiTaskNet argument (not silently dropped)."""
    from medmtl.config import compose
    from medmtl.workflows.build import model_kwargs

    cfg = compose("train", ["model.norm=group", "model/encoder=resnet18"])
    kw = model_kwargs(cfg.model)
    assert kw.norm == "group"
    net = MultiTaskNet.from_settings(kw, ["normal", "benign", "malignant"])
    assert net.norm == "group" and not batchnorm_layers(net)
    assert model_kwargs(compose("train", []).model).norm == "batch"


def test_threshold_evidence_recentres_each_flip_view_as_evaluation_does():
    from medmtl.models.ensemble import combine_views, mirrored_back
    from medmtl.workflows.gate import _at_threshold

    net = _tiny_net()
    x = torch.randn(3, 1, 64, 64, generator=torch.Generator().manual_seed(5))

    def flipped_pair() -> dict:
        with torch.no_grad():
            return combine_views([net(x), mirrored_back(net(torch.flip(x, dims=[3])))])

    raw = flipped_pair()  # mask_threshold 0.5: the map itself, with each view's probabilities
    for threshold in (0.3, 0.6):
        net.gate = Gate(mask_threshold=threshold)
        used = flipped_pair()["seg"]
        net.gate = Gate(mask_threshold=0.5)
        assert torch.allclose(_at_threshold(raw, threshold).float(), used, atol=1e-4)
    single = {"seg": raw["seg"]}
    assert torch.allclose(_at_threshold(single, 0.3), raw["seg"] - math.log(0.3 / 0.7))

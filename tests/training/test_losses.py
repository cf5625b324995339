"""The λ-weighted combination, the loss options and the learned weighting."""

from __future__ import annotations

import pytest
import torch

from medmtl.errors import ConfigError
from medmtl.training.losses import CLS_LOSSES, SEG_LOSSES, MultiTaskLoss, presence_loss


def _batch():
    torch.manual_seed(0)
    out = {"seg": torch.randn(2, 1, 8, 8), "cls": torch.randn(2, 3)}
    mask = (torch.rand(2, 1, 8, 8) > 0.5).float()
    return out, mask, torch.tensor([0, 2])


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.7, 1.0])
def test_lambda_weights_seg_then_cls(lam):
    out, mask, label = _batch()
    parts = MultiTaskLoss(seg_weight=lam)(out, mask, label)
    expected = lam * parts["loss_seg"] + (1 - lam) * parts["loss_cls"]
    assert torch.allclose(parts["loss"], expected)


@pytest.mark.parametrize("seg", SEG_LOSSES)
@pytest.mark.parametrize("cls", CLS_LOSSES)
def test_every_loss_is_finite_and_differentiable(seg, cls):
    out, mask, label = _batch()
    out = {k: v.requires_grad_() for k, v in out.items()}
    loss = MultiTaskLoss(seg=seg, cls=cls, label_smoothing=0.1 if cls == "ce" else 0.0)(
        out, mask, label
    )["loss"]
    loss.backward()
    assert torch.isfinite(loss) and out["seg"].grad is not None and out["cls"].grad is not None


def test_class_weights_change_ce():
    out, mask, label = _batch()
    plain = MultiTaskLoss(seg_weight=0.0)(out, mask, label)["loss"]
    weighted = MultiTaskLoss(seg_weight=0.0, class_weights=[1.0, 1.0, 5.0])(out, mask, label)[
        "loss"
    ]
    assert not torch.allclose(plain, weighted)
    with pytest.raises(ConfigError, match="class_weights has 2 values"):
        MultiTaskLoss(class_weights=[1.0, 2.0])


def test_uncertainty_weighting_learns_log_variances():
    out, mask, label = _batch()
    loss_fn = MultiTaskLoss(weighting="uncertainty")
    parts = loss_fn(out, mask, label)
    assert torch.allclose(parts["loss"], parts["loss_seg"] + parts["loss_cls"])  # s = 0 at start
    parts["loss"].backward()
    assert loss_fn.log_vars.grad is not None


def test_single_task_losses():
    out, mask, label = _batch()
    seg = MultiTaskLoss(task="seg")({"seg": out["seg"], "cls": None}, mask, label)
    assert "loss_cls" not in seg and torch.allclose(seg["loss"], seg["loss_seg"])
    cls = MultiTaskLoss(task="cls")({"seg": None, "cls": out["cls"]}, mask, label)
    assert "loss_seg" not in cls


def test_bad_loss_config():
    with pytest.raises(ConfigError, match="loss.seg='dyce'"):
        MultiTaskLoss(seg="dyce")
    with pytest.raises(ConfigError, match="λ must be a number in"):
        MultiTaskLoss(seg_weight=1.5)
    with pytest.raises(ConfigError, match="loss.presence_weight=-1"):
        MultiTaskLoss(presence_weight=-1)


def test_presence_term_penalises_an_empty_mask_on_a_lesion_image():
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, 0, 2:4, 2:4] = 1  # image 0 has a lesion, image 1 none
    empty = torch.full((2, 1, 8, 8), -6.0)  # no pixel anywhere
    found = empty.clone()
    found[0, 0, 6, 6] = 6.0  # a confident pixel on image 0, even outside its lesion
    assert presence_loss(empty, mask) > 1.0 > 0.01 > presence_loss(found, mask)
    wrong = found.clone()
    wrong[1, 0, 0, 0] = 6.0  # a confident pixel on the lesion-free image
    assert presence_loss(wrong, mask) > 1.0
    # the term only enters the total when asked for, with its weight
    out = {"seg": found, "cls": torch.zeros(2, 3)}
    label = torch.tensor([1, 0])
    off = MultiTaskLoss()(out, mask, label)
    on = MultiTaskLoss(presence_weight=0.5)(out, mask, label)
    assert "loss_presence" not in off
    assert torch.allclose(on["loss"], off["loss"] + 0.5 * on["loss_presence"])


def test_distillation_loss_is_minimal_where_the_student_matches_the_teacher():
    from medmtl.training.losses import distillation_loss

    torch.manual_seed(0)
    teacher = {"cls": torch.randn(4, 3), "seg": torch.randn(4, 1, 8, 8)}
    same = {k: v.clone().requires_grad_(True) for k, v in teacher.items()}
    loss = distillation_loss(same, teacher, seg_weight=0.7, temperature=2.0)
    loss.backward()
    # KL of equal distributions is 0; the soft-target BCE is at its minimum (zero gradient)
    assert same["cls"].grad.abs().max() < 1e-6 and same["seg"].grad.abs().max() < 1e-6
    cls_only = distillation_loss({"cls": same["cls"], "seg": None}, teacher, 0.7, 2.0)
    assert float(cls_only.detach()) == pytest.approx(0.0, abs=1e-6)
    other = {k: torch.randn_like(v) for k, v in teacher.items()}
    assert distillation_loss(other, teacher, 0.7, 2.0) > loss

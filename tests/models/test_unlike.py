"""The unlike-training score: known answers on constructed features, storage, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmtl.errors import ConfigError
from medmtl.models.unlike import FeatureDistance, unlike_record
from medmtl.settings.train import check_quantile


def _features(rng, n, shift=0.0, d=16):
    label = rng.integers(0, 3, n)
    centres = np.eye(3, d) * 4.0
    return centres[label] + rng.normal(size=(n, d)) + shift, label


def test_distance_separates_shifted_features_and_passes_the_quantile():
    rng = np.random.default_rng(0)
    train, label = _features(rng, 400)
    val, _ = _features(rng, 400)
    head = FeatureDistance(16, 3)
    assert not head.fitted and torch.isnan(head(torch.zeros(2, 16))).all()
    fitted = head.fit(train, label, val, quantile=0.9)
    assert head.fitted and fitted["unlike/num_train"] == 400
    inside, _ = _features(rng, 2000)
    shifted, _ = _features(rng, 2000, shift=1.5)
    s_in = head(torch.from_numpy(inside).float()).numpy()
    s_out = head(torch.from_numpy(shifted).float()).numpy()
    # the threshold passes ~90 % of new in-domain features (binomial sd of 400 val: 1.5 %)
    assert np.mean(s_in <= 1) == pytest.approx(0.9, abs=0.05)
    from sklearn.metrics import roc_auc_score

    auroc = roc_auc_score(np.r_[np.zeros(2000), np.ones(2000)], np.r_[s_in, s_out])
    assert auroc > 0.95
    assert np.mean(s_out > 1) > 0.8


def test_distance_equals_the_mahalanobis_formula():
    rng = np.random.default_rng(1)
    train, label = _features(rng, 300, d=5)
    head = FeatureDistance(5, 3)
    head.fit(train, label, train[:50])
    x = rng.normal(size=(7, 5))
    P = head.whiten.double().T @ head.whiten.double()  # the precision matrix
    means = head.means.double().numpy()
    d2 = np.array([[(v - m) @ P.numpy() @ (v - m) for m in means] for v in x])
    got = head.distance(torch.from_numpy(x).float()).double().numpy()
    np.testing.assert_allclose(got, np.sqrt(d2.min(1)), rtol=1e-4)


def test_quantile_and_fit_inputs_are_checked():
    for bad in (0, 1, 1.5, "x", True, None):
        with pytest.raises(ConfigError, match="unlike.quantile"):
            check_quantile(bad)
    head = FeatureDistance(4, 3)
    with pytest.raises(ConfigError, match="training and validation"):
        head.fit(np.zeros((5, 4)), np.zeros(5), np.zeros((0, 4)))


def test_an_old_checkpoint_loads_unfitted_and_a_new_one_keeps_the_score():
    from medmtl.models.multitask import MultiTaskNet

    net = MultiTaskNet("Unet", "resnet18", None, 1, 3).eval()
    rng = np.random.default_rng(2)
    with torch.no_grad():
        f = net.pooled_features(torch.randn(30, 1, 64, 64)).numpy()
    net.unlike.fit(f, rng.integers(0, 3, 30), f[:10])
    old = {k: v for k, v in net.state_dict().items() if not k.startswith("unlike.")}
    fresh = MultiTaskNet("Unet", "resnet18", None, 1, 3)
    fresh.load_state_dict(old)
    assert not fresh.unlike.fitted and unlike_record(fresh) == {"fitted": False}
    fresh.load_state_dict(net.state_dict())
    assert unlike_record(fresh)["threshold"] == pytest.approx(float(net.unlike.threshold))
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(
            fresh.eval()(x)["unlike_score"].numpy(), net(x)["unlike_score"].numpy(), rtol=1e-6
        )
    assert net.train()(x)["unlike_score"] is None  # not computed while training


def test_the_score_reaches_torch_and_onnx_predictions(tiny_ckpt, tmp_path):
    """Trained models carry a fitted score; the exported model computes the same one."""
    from medmtl.inference.core import predict_batch
    from medmtl.inference.export import export_onnx
    from medmtl.inference.onnx_backend import OnnxBackend
    from medmtl.inference.torch_backend import TorchBackend

    torch_backend = TorchBackend(tiny_ckpt)
    assert torch_backend.card["unlike"]["fitted"]
    onnx = OnnxBackend(export_onnx(tiny_ckpt, tmp_path / "m.onnx"))
    assert onnx.card["unlike"] == torch_backend.card["unlike"]
    assert onnx.answer_sets is not None  # the conformal calibration travels too
    batch = np.random.default_rng(0).normal(size=(3, 1, 64, 64)).astype(np.float32)
    a, b = predict_batch(torch_backend, batch, tta=True), predict_batch(onnx, batch, tta=True)
    assert a.unlike_score is not None and np.isfinite(a.unlike_score).all()
    np.testing.assert_allclose(b.unlike_score, a.unlike_score, rtol=1e-4)
    np.testing.assert_allclose(b.class_disagreement, a.class_disagreement, atol=1e-5)
    np.testing.assert_allclose(b.mask_agreement, a.mask_agreement, atol=1e-3)
    assert predict_batch(torch_backend, batch).class_disagreement is None  # one view: none

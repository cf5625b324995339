"""Temperature scaling: known answers, the network's temperature, checkpoints and ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmtl.errors import ConfigError
from medmtl.metrics import brier, calibration, nll
from medmtl.models import MultiTaskNet
from medmtl.models.calibration import fit_temperature, scaled_probabilities


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _sampled(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True logits and labels drawn from their softmax: the logits are calibrated."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, size=(n, 3))
    p = _softmax(z)
    label = (rng.random(n)[:, None] > np.cumsum(p, 1)).sum(1)
    return z, label


@pytest.mark.parametrize("true_t", [0.5, 2.0, 3.0])
def test_recovers_a_known_temperature(true_t):
    z, label = _sampled(20_000, seed=int(true_t * 10))
    # a model whose logits are the calibrated ones times 1/T... over-confident for T > 1
    fitted = fit_temperature(z * true_t, label)
    assert fitted == pytest.approx(true_t, rel=0.05)
    before = nll(_softmax(z * true_t), label)[0]
    after = nll(scaled_probabilities(z * true_t, fitted), label)[0]
    assert after < before
    ece_after = calibration(scaled_probabilities(z * true_t, fitted), label)["ece"][0]
    assert ece_after < calibration(_softmax(z * true_t), label)["ece"][0]


@pytest.mark.parametrize("seed", range(5))
def test_never_raises_validation_nll(seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(40, 3))
    label = rng.integers(0, 3, 40)
    t = fit_temperature(z, label)
    assert nll(scaled_probabilities(z, t), label)[0] <= nll(_softmax(z), label)[0] + 1e-12
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0
    # all-equal logits: no temperature changes anything, so none is fitted
    assert fit_temperature(np.zeros((10, 3)), label[:10]) == 1.0


def test_views_are_averaged_after_scaling():
    z = np.array([[[4.0, 0.0, 0.0]], [[0.0, 4.0, 0.0]]])  # two views of one image
    want = 0.5 * (_softmax(z[0] / 2) + _softmax(z[1] / 2))
    np.testing.assert_allclose(scaled_probabilities(z, 2.0), want)


def test_nll_and_brier_known_values():
    prob = np.array([[0.5, 0.5, 0.0], [0.1, 0.1, 0.8]])
    label = np.array([0, 2])
    assert nll(prob, label)[0] == pytest.approx(-(np.log(0.5) + np.log(0.8)) / 2)
    assert brier(prob, label)[0] == pytest.approx(((0.25 + 0.25) + (0.01 + 0.01 + 0.04)) / 2)
    # resampling weights: the second image twice, the first not at all
    w = np.array([[0, 2]])
    assert nll(prob, label, w)[0] == pytest.approx(-np.log(0.8))
    assert brier(prob, label, w)[0] == pytest.approx(0.06)


def test_the_network_divides_its_class_logits_and_keeps_the_arg_max():
    torch.manual_seed(0)
    net = MultiTaskNet("Unet", "resnet18", num_classes=3).eval()
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        raw = net(x)
        net.set_temperature(2.5)
        scaled = net(x)
    assert net.temperature == pytest.approx(2.5)
    torch.testing.assert_close(scaled["cls"], raw["cls"] / 2.5)
    torch.testing.assert_close(scaled["seg"], raw["seg"])  # the mask is not touched
    assert torch.equal(scaled["cls"].argmax(1), raw["cls"].argmax(1))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="positive"):
            net.set_temperature(bad)


def test_older_state_dicts_load_as_uncalibrated():
    net = MultiTaskNet("Unet", "resnet18", num_classes=3)
    net.set_temperature(3.0)
    state = {k: v for k, v in net.state_dict().items() if k != "cls_temperature"}
    fresh = MultiTaskNet("Unet", "resnet18", num_classes=3)
    fresh.set_temperature(2.0)
    fresh.load_state_dict(state)  # strict: nothing else is missing
    assert fresh.temperature == 1.0
    fresh.load_state_dict(net.state_dict())
    assert fresh.temperature == pytest.approx(3.0)


def test_stored_temperature_reaches_torch_and_onnx_predictions(tiny_ckpt, tmp_path):
    from medmtl.inference.core import predict_batch
    from medmtl.inference.export import export_onnx
    from medmtl.inference.onnx_backend import OnnxBackend
    from medmtl.inference.torch_backend import TorchBackend
    from medmtl.models.checkpoint import network_from_checkpoint, store_calibration

    ckpt = tmp_path / "hot.ckpt"
    ckpt.write_bytes(tiny_ckpt.read_bytes())
    store_calibration(ckpt, 4.0)
    assert network_from_checkpoint(ckpt)[0].temperature == pytest.approx(4.0)
    cold = tmp_path / "cold.ckpt"
    cold.write_bytes(tiny_ckpt.read_bytes())
    store_calibration(cold, 1.0)
    batch = np.random.default_rng(0).normal(size=(2, 1, 64, 64)).astype(np.float32)
    hot, plain = TorchBackend(ckpt), TorchBackend(cold)
    onnx = OnnxBackend(export_onnx(ckpt, tmp_path / "hot.onnx"))
    pred = predict_batch(hot, batch)
    _, p_hot = pred.seg, pred.cls
    pred = predict_batch(plain, batch)
    _, p_plain = pred.seg, pred.cls
    pred = predict_batch(onnx, batch)
    _, p_onnx = pred.seg, pred.cls
    np.testing.assert_allclose(p_onnx, p_hot, atol=1e-5)
    # the temperature did something: softer probabilities, the same classes
    assert p_hot.max(1).max() < p_plain.max(1).max()
    np.testing.assert_array_equal(p_hot.argmax(1), p_plain.argmax(1))
    assert onnx.meta["calibration"]["temperature"] == pytest.approx(4.0)
    assert onnx.card["calibration"]["temperature"] == pytest.approx(4.0)  # the page's model card


def test_a_temperature_at_the_top_of_its_range_is_warned_about(caplog):
    """Labels that are not the classes of the probabilities (a site's own class indices for a
    model with one class more) drive the temperature to its upper bound: said in the log."""
    import logging

    rng = np.random.default_rng(0)
    label = rng.integers(1, 3, 200)  # the model's benign (1) and malignant (2)
    logits = 2.0 * np.eye(3)[label] + rng.normal(0, 1.0, (200, 3))
    with caplog.at_level(logging.WARNING, logger="medmtl.models.calibration"):
        assert fit_temperature(logits, label) < 2
    assert "top of its range" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="medmtl.models.calibration"):
        t = fit_temperature(logits, label - 1)  # the site's indices: normal and benign
    assert t > 19 and "top of its range" in caplog.text

"""trainer.precision=auto: bf16 only with bf16 hardware and a measured gain."""

from __future__ import annotations

import torch
from torch import nn

import medmtl.training.precision as prec
from tests.conftest import run_cli


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        return {"seg": self.conv(x), "cls": None}


def test_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 amx_bf16 amx_tile\n\n")
    assert {"avx2", "amx_bf16"} <= prec.cpu_flags(info)
    assert prec.cpu_flags(tmp_path / "missing") == set()


def test_auto_without_bf16_hardware_is_fp32_and_times_nothing(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("no timing without bf16 hardware")

    monkeypatch.setattr(prec, "_step_seconds", boom)
    precision, why = prec.choose_precision("auto", "cpu", _Net(), (2, 1, 8, 8), flags={"avx2"})
    assert precision == "32-true" and "no AMX or AVX-512-BF16" in why
    assert prec.choose_precision(32, "cpu", _Net(), (2, 1, 8, 8)) == ("32", "as configured")


def test_auto_with_bf16_hardware_follows_the_measurement(monkeypatch):
    net = _Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for fp32, bf16, want in (
        (1.0, 0.4, "bf16-mixed"),
        (1.0, 0.95, "32-true"),
        (1.0, 0.85, "32-true"),
    ):
        monkeypatch.setattr(prec, "_step_seconds", lambda n, x, b, s, f=fp32, g=bf16: g if b else f)
        precision, why = prec.choose_precision("auto", "cpu", net, (2, 1, 8, 8), flags={"amx_bf16"})
        assert precision == want and "amx_bf16" in why
    # the real timing runs on a copy: the model's weights and gradients stay untouched
    monkeypatch.undo()
    prec.choose_precision("auto", "cpu", net, (2, 1, 8, 8), flags={"amx_bf16"}, steps=1)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def test_bf16_training_with_test_time_flip_is_tested(tmp_path, cache_dir):
    """bf16-mixed (what auto picks where bf16 gains): the test step's mirror disagreement is
    computed on bf16 outputs, which numpy cannot hold (a fold of a real sweep died there)."""
    import json

    from tests.conftest import TINY_MODEL, TINY_PHANTOM

    run = tmp_path / "run"
    res = run_cli(
        "train",
        *TINY_PHANTOM,
        *TINY_MODEL,
        "trainer.max_epochs=1",
        "trainer.precision=bf16-mixed",
        "tta=true",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={run}",
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trainer/precision"] == "bf16-mixed"
    assert "test/seg_dice" in metrics


def test_auto_with_several_processes_is_fp32_and_times_nothing(monkeypatch):
    """DDP: every rank would time its own step and, under load, two ranks could choose
    differently (one bf16, one fp32); auto stays fp32 and says how to ask for bf16."""

    def boom(*a, **k):
        raise AssertionError("no timing with several processes")

    monkeypatch.setattr(prec, "_step_seconds", boom)
    precision, why = prec.choose_precision(
        "auto", "cpu", _Net(), (2, 1, 8, 8), flags={"amx_bf16"}, processes=2
    )
    assert precision == "32-true" and "trainer.precision=bf16-mixed" in why
    assert prec.training_processes({"devices": 2, "num_nodes": 1}) == 2
    assert prec.training_processes({"devices": [0, 1], "num_nodes": 2}) == 4
    assert prec.training_processes({"devices": "3"}) == 3
    assert prec.training_processes({"devices": "auto"}) == 1
    assert prec.training_processes({}) == 1


def test_the_timed_probe_leaves_the_random_state_as_it_was(monkeypatch):
    """An auto run draws what the same run with the chosen precision draws: the probe's random
    batch and its own draws (dropout) do not advance the run's generator."""

    def step(probe, x, bf16, steps):
        torch.rand(5)  # what a training step with dropout draws
        return 1.0

    monkeypatch.setattr(prec, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setattr(prec, "_step_seconds", step)
    net = nn.Linear(2, 2)
    torch.manual_seed(0)
    chosen, _ = prec.choose_precision("auto", "cpu", net, (2, 1, 8, 8))
    after = torch.rand(3)
    torch.manual_seed(0)
    assert chosen == "32-true" and torch.equal(after, torch.rand(3))

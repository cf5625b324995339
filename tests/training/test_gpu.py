"""The GPU questions asked on the machine that trains, with that machine mocked: whether it can
train on CUDA, and which mixed precision its GPUs get."""

from __future__ import annotations

import socket

import pytest
import torch
from torch import nn

from medmtl.training.gpu import CudaFacts, gpu_precision, gpu_problem, runs_kernels
from medmtl.training.precision import choose_precision
from tests.conftest import refused

ARCHS = ("sm_75", "sm_80", "sm_86", "sm_90", "compute_90")


def _gpus(*caps: tuple[int, int], names: tuple[str, ...] = ()) -> CudaFacts:
    return CudaFacts(
        True,
        count=len(caps),
        torch_cuda="12.8",
        arch_list=ARCHS,
        capabilities=caps,
        names=names or tuple(f"GPU{i}" for i in range(len(caps))),
        host="gpu-node-7",
    )


@pytest.mark.parametrize(
    ("capability", "precision"),
    [((7, 0), "16-mixed"), ((7, 5), "16-mixed"), ((8, 0), "bf16-mixed"), ((8, 9), "bf16-mixed"),
     ((9, 0), "bf16-mixed"), ((6, 1), "16-mixed")],
)  # fmt: skip
def test_gpu_precision_by_capability(capability, precision):
    """bf16 from Ampere (8.0) on; before it fp16, whose gradient scaler Lightning adds."""
    chosen, why = gpu_precision(capability)
    assert chosen == precision
    assert f"{capability[0]}.{capability[1]}" in why
    if precision == "16-mixed":
        assert "gradient scaler" in why


@pytest.mark.parametrize(
    ("capability", "precision"), [((7, 5), "16-mixed"), ((9, 0), "bf16-mixed")]
)
def test_auto_precision_on_a_mocked_gpu(monkeypatch, capability, precision):
    """trainer.precision=auto with trainer=gpu asks the GPU's capability (no timing on a GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    chosen, why = choose_precision("auto", "gpu", nn.Linear(2, 2), (1, 2))
    assert chosen == precision and "compute capability" in why
    # an explicit precision is kept on a GPU too
    assert choose_precision("16-mixed", "gpu", nn.Linear(2, 2), (1, 2))[0] == "16-mixed"


def test_runs_kernels_binary_or_older_ptx():
    assert runs_kernels((8, 0), ARCHS)  # a binary for it
    assert runs_kernels((10, 0), ARCHS)  # PTX of 9.0, compiled by the driver
    assert not runs_kernels((6, 0), ARCHS)  # older than every kernel
    assert not runs_kernels((8, 0), ("sm_90",))
    assert runs_kernels((3, 5), ())  # unknown list: not refused


def test_gpu_problem_names_the_node_and_the_reason():
    assert gpu_problem(1, _gpus((8, 0))) is None
    assert gpu_problem("auto", _gpus((8, 0), (8, 0))) is None
    assert gpu_problem(-1, _gpus((9, 0))) is None
    assert gpu_problem([0, 1], _gpus((8, 0), (8, 0))) is None
    too_many = gpu_problem(4, _gpus((8, 0), (8, 0)))
    assert too_many == "node gpu-node-7 has 2 usable GPU(s); the run asks for 4"
    assert "the run asks for 2" in gpu_problem("0,1", _gpus((8, 0)))
    old = gpu_problem(1, _gpus((6, 0), names=("Tesla P100",)))
    assert old.startswith("node gpu-node-7's Tesla P100 (compute capability 6.0)")
    given = gpu_problem(1, CudaFacts(False, torch_cuda="12.8", visible="0", host="n1"))
    assert given.startswith("node n1 has no usable GPU") and "CUDA_VISIBLE_DEVICES=0" in given
    cpu_build = gpu_problem(1, CudaFacts(False, torch_cuda=None, host="n1"))
    assert "CPU-only build" in cpu_build
    none = gpu_problem(1, CudaFacts(False, torch_cuda="12.8", host="n1"))
    assert none == "node n1 has no usable GPU (torch (CUDA 12.8) finds no CUDA device)"


def test_a_gpu_run_here_is_refused_with_both_ways_on(capsys, monkeypatch):
    """A single run with profile=gpu on this GPU-less machine: one line naming the node, with
    the two ways on (train here on the CPU, or send the sweep to a GPU cluster)."""
    from medmtl.cli import train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr("sys.argv", ["medmtl-train", "profile=gpu"])
    line = refused(train.main, capsys)
    assert f"node {socket.gethostname()} has no usable GPU" in line
    assert "trainer=cpu" in line and "hydra/launcher=slurm_gpu" in line

"""What the GPUs of the machine a run lands on can do: whether CUDA is usable for the run, and
which mixed precision fits their compute capability.

These are questions about the machine that trains, never the one that submits: a sweep sent to
a cluster asks them inside each job (:func:`medmtl.workflows.build.check_this_machine`). Each
answer is a plain function of a few facts (:class:`CudaFacts`) so that tests can give it a
machine that is not there.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

# compute capability from which the GPU computes bf16 in hardware (Ampere: A100, A10, L4 is
# Ada 8.9, H100 is 9.0); below it (V100 7.0, T4 7.5) fp16 with a gradient scaler
BF16_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class CudaFacts:
    """What torch says about CUDA on this machine (:func:`cuda_facts`)."""

    available: bool
    count: int = 0
    torch_cuda: str | None = None  # the CUDA version torch was built with (None: a CPU build)
    arch_list: tuple[str, ...] = ()  # the kernels torch ships: sm_80, compute_90, ...
    capabilities: tuple[tuple[int, int], ...] = ()
    names: tuple[str, ...] = ()
    visible: str | None = field(default=None)  # CUDA_VISIBLE_DEVICES as the job got it
    host: str = ""


def cuda_facts() -> CudaFacts:
    """The facts of this machine, read from torch (CUDA is initialised only when available)."""
    import torch

    host = socket.gethostname()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not torch.cuda.is_available():
        return CudaFacts(False, torch_cuda=torch.version.cuda, visible=visible, host=host)
    count = torch.cuda.device_count()
    return CudaFacts(
        True,
        count=count,
        torch_cuda=torch.version.cuda,
        arch_list=tuple(torch.cuda.get_arch_list()),
        capabilities=tuple(torch.cuda.get_device_capability(i) for i in range(count)),
        names=tuple(torch.cuda.get_device_name(i) for i in range(count)),
        visible=visible,
        host=host,
    )


def runs_kernels(capability: tuple[int, int], arch_list: tuple[str, ...]) -> bool:
    """Whether torch's kernels run on a GPU of ``capability``: a binary for its exact
    architecture (``sm_XY``), or PTX of an older or equal one that the driver compiles
    (``compute_XY``). An empty list (unknown) is taken as yes."""
    if not arch_list:
        return True
    number = capability[0] * 10 + capability[1]

    def value(arch: str) -> int:
        return int("".join(ch for ch in arch.split("_", 1)[1] if ch.isdigit()) or 0)

    binaries = {value(a) for a in arch_list if a.startswith("sm_")}
    ptx = [value(a) for a in arch_list if a.startswith("compute_")]
    return number in binaries or any(p <= number for p in ptx)


def gpu_problem(devices: object = 1, facts: CudaFacts | None = None) -> str | None:
    """Why this machine cannot train on ``devices`` GPUs (a count, a list, ``auto`` or -1), in
    words that name the node; None when it can."""
    facts = cuda_facts() if facts is None else facts
    node = f"node {facts.host}" if facts.host else "this machine"
    if not facts.available:
        if facts.torch_cuda is None:
            why = "torch is a CPU-only build"
        elif facts.visible not in (None, ""):
            why = (
                f"it was given CUDA_VISIBLE_DEVICES={facts.visible} but torch "
                f"(CUDA {facts.torch_cuda}) finds no CUDA device: no driver, or no GPU behind it"
            )
        else:
            why = f"torch (CUDA {facts.torch_cuda}) finds no CUDA device"
        return f"{node} has no usable GPU ({why})"
    wanted = _count(devices)
    if wanted is not None and wanted > facts.count:
        return f"{node} has {facts.count} usable GPU(s); the run asks for {wanted}"
    for name, cap in zip(facts.names, facts.capabilities, strict=False):
        if not runs_kernels(cap, facts.arch_list):
            return (
                f"{node}'s {name} (compute capability {cap[0]}.{cap[1]}) is not supported by "
                f"this torch build (kernels for {', '.join(facts.arch_list)})"
            )
    return None


def _count(devices: object) -> int | None:
    """How many GPUs ``devices`` asks for (None: all there are)."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return None if devices == -1 else devices
    if isinstance(devices, str):
        text = devices.strip()
        if text.lstrip("-").isdigit():
            return _count(int(text))
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        return None  # auto
    if isinstance(devices, (list, tuple)):
        return len(devices)
    return None


def gpu_precision(capability: tuple[int, int]) -> tuple[str, str]:
    """The mixed precision for a GPU of ``capability``, and why: bf16 where the GPU computes it
    in hardware (no loss scaling needed), else fp16 with Lightning's gradient scaler."""
    cap = f"{capability[0]}.{capability[1]}"
    if tuple(capability) >= BF16_CAPABILITY:
        return "bf16-mixed", f"auto: the GPU (compute capability {cap}) computes bf16"
    return "16-mixed", (
        f"auto: the GPU (compute capability {cap}) has no bf16; fp16 with a gradient scaler"
    )

"""``trainer.precision=auto``: bf16 autocast only where the CPU computes bf16 in hardware and
this model's training step is measurably faster with it.

On an AVX2-only CPU bf16 autocast is ~12x slower than fp32; on a Xeon with AMX a 2-thread
step of Unet + ResNet50 at 256 px was 2.4x faster and one of Unet + Lite0 at 160 px 0.93x
(docs/benchmarks.md). So the choice needs the hardware flag *and* a measurement of the model
at hand: a few timed forward/backward steps in each precision on a random batch.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medmtl.training.gpu import gpu_precision

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# bf16 must be at least this much faster to be worth its rounding. The timed step is a model-only
# probe: on an AVX-512-BF16 EPYC it measured 1.12-1.17x for the multi-site recipe's member while
# its real epochs (data loading, validation, mixed-precision casts) took 5-15 % longer in bf16
# than in fp32 (docs/results.md, issue 21); gains this small are not real. AMX's ~2.4x is.
MIN_SPEEDUP = 1.25


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not readable)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _step_seconds(net: nn.Module, x: torch.Tensor, bf16: bool, steps: int) -> float:
    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
            loss = sum(v.float().mean() for v in out.values() if v is not None)
        loss.backward()
        net.zero_grad(set_to_none=True)

    step()  # warm-up: kernels, allocator
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def trainer_setting(trainer_cfg: Mapping[str, Any] | None, key: str) -> Any:
    """``trainer.<key>`` of a run, or what Lightning's Trainer does without it (the ``trainer``
    group is Lightning's own arguments: their defaults live there, not in medmtl)."""
    import inspect

    import lightning as L

    if trainer_cfg is not None and trainer_cfg.get(key) is not None:
        return trainer_cfg[key]
    return inspect.signature(L.Trainer.__init__).parameters[key].default


def training_processes(trainer_cfg: Mapping[str, Any]) -> int:
    """How many processes a Lightning trainer config trains with: devices (a count or a list)
    times num_nodes; 1 for ``auto`` or anything else it cannot count."""
    devices = trainer_setting(trainer_cfg, "devices")
    if isinstance(devices, int):
        count = devices
    elif isinstance(devices, str) and devices.strip().isdigit():
        count = int(devices)
    elif isinstance(devices, Sequence) and not isinstance(devices, str):
        count = len(devices)
    else:
        count = 1
    nodes = trainer_setting(trainer_cfg, "num_nodes")
    return max(1, count) * (nodes if isinstance(nodes, int) and nodes > 0 else 1)


def choose_precision(
    requested: object,
    accelerator: str,
    net: nn.Module,
    batch_shape: tuple[int, ...],
    flags: set[str] | None = None,
    steps: int = 3,
    processes: int = 1,
) -> tuple[str, str]:
    """The Lightning precision to train with, and why (for the log and ``metrics.json``).

    Anything but ``auto`` is kept. On a GPU ``auto`` is ``bf16-mixed`` from compute capability
    8.0 on, else ``16-mixed`` (:func:`medmtl.training.gpu.gpu_precision`). On a CPU it is ``32-true`` unless the CPU has AMX or AVX-512-BF16 and a timed
    step of a copy of ``net`` on a random batch of ``batch_shape`` is at least
    :data:`MIN_SPEEDUP` times faster in bf16 (the copy keeps the model's weights untouched).
    With several training ``processes`` (DDP) it is ``32-true`` without timing: each process
    would time its own step, and under load two ranks could choose differently.
    """
    if str(requested) != "auto":
        return str(requested), "as configured"
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        return gpu_precision(torch.cuda.get_device_capability())
    flags = cpu_flags() if flags is None else flags
    found = sorted(set(BF16_FLAGS) & flags)
    if not found:
        return "32-true", "auto: the CPU has no AMX or AVX-512-BF16 (bf16 would be emulated)"
    if processes > 1:
        return "32-true", (
            f"auto: {processes} training processes would each time their own step and could "
            "disagree; set trainer.precision=bf16-mixed to train in bf16"
        )
    # the random batch and the probe's dropout draw from a forked generator: the run that
    # follows draws exactly what it would have drawn without the probe (an auto run equals
    # the same run with the precision it chose, to the last digit)
    with torch.random.fork_rng(devices=[]):
        probe = copy.deepcopy(net).train()
        x = torch.randn(*batch_shape)
        fp32 = _step_seconds(probe, x, False, steps)
        bf16 = _step_seconds(probe, x, True, steps)
    speedup = fp32 / bf16
    why = f"auto: {', '.join(found)}; a training step {fp32:.3f} s in fp32, {bf16:.3f} s in bf16"
    if speedup >= MIN_SPEEDUP:
        return "bf16-mixed", f"{why} ({speedup:.2f}x faster)"
    return "32-true", f"{why} ({speedup:.2f}x: not worth it)"

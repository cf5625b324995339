"""``scripts/gpu-check`` (``medmtl-bench gpu``): what a GPU machine does with the study.

For three study cells at 256 px (Unet + ResNet-50, Unet++ + EfficientNet-b4, Unet + MiT-B2),
each trained by ``medmtl-train profile=gpu`` itself (a subprocess, the study's own code path):

- a fixed number of training steps in fp32, then a full BUSI epoch in the mixed precision the
  GPU supports (bf16-mixed from compute capability 8.0, else 16-mixed) and its validation;
- from each, training images/s and the share of time the GPU waited for data
  (:class:`medmtl.training.throughput.Throughput`), and the peak GPU memory;
- with two or more GPUs, the first cell's epoch again with DDP on two GPUs, and its speed-up.

It prints and writes one JSON (torch, CUDA and cuDNN versions, the GPUs, every measurement),
and exits non-zero when anything failed. Nothing is downloaded: encoders start from ImageNet
weights only where they are already cached, else from random ones (the JSON says which).
``dry=true`` runs the same steps on the CPU at 64 px, batch 4 and 16 images per split, so that
CI keeps the path alive.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmtl.io.files import atomic_write_text
from medmtl.settings.checks import choice

CELLS = (
    ("unet", "resnet50"),
    ("unetplusplus", "efficientnet_b4"),
    ("unet", "mit_b2"),
)
FP32_STEPS = 30  # timed steps of the fp32 run (after Throughput's warm-up)


@dataclass(frozen=True)
class Plan:
    """What each run of the check is given."""

    dry: bool
    busi_root: Path
    out_dir: Path

    @property
    def base(self) -> list[str]:
        common = ["profile=gpu", "data=busi", f"data.root={self.busi_root}", "logger=csv",
                  "+callbacks.throughput._target_=medmtl.training.throughput.Throughput"]  # fmt: skip
        if not self.dry:
            return common
        return [*common, "trainer.accelerator=cpu", "data.image_size=64", "data.batch_size=4",
                "data.eval_batch_size=8", "data.subset=16", "data.num_workers=0",
                "+callbacks.throughput.warmup=1"]  # fmt: skip

    @property
    def fp32_steps(self) -> int:
        return 3 if self.dry else FP32_STEPS


def versions() -> dict[str, Any]:
    """torch, CUDA, cuDNN, the GPUs and the CPUs of this machine."""
    import torch

    from medmtl.bench.common import machine_line
    from medmtl.training.gpu import cuda_facts

    facts = cuda_facts()
    return {
        "machine": machine_line(),
        "host": platform.node(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if facts.available else None,
        "gpus": [
            {"name": n, "capability": f"{c[0]}.{c[1]}"}
            for n, c in zip(facts.names, facts.capabilities, strict=True)
        ],
        "cpus_for_this_job": len(os.sched_getaffinity(0)),
    }


def _mixed_precision(dry: bool) -> str:
    """The GPU's mixed precision; on the CPU (``dry``) ``auto``, which takes bf16 only where
    the CPU computes it in hardware (emulated bf16 is ~12x slower: minutes for a dry check)."""
    import torch

    from medmtl.training.gpu import gpu_precision

    if dry or not torch.cuda.is_available():
        return "auto"
    return gpu_precision(torch.cuda.get_device_capability())[0]


def _weights(encoder: str) -> str:
    """``imagenet`` where those weights are cached, else ``null`` (nothing is downloaded)."""
    from medmtl.config import compose
    from medmtl.errors import ConfigError
    from medmtl.models.weights import check_downloadable
    from medmtl.workflows.build import net_settings

    os.environ["HF_HUB_OFFLINE"] = "1"  # the check reads the caches only
    cfg = compose("train", ["profile=gpu", f"model/encoder={encoder}"])
    net = net_settings(cfg)
    try:
        check_downloadable(net.encoder, net.encoder_weights)
    except ConfigError:
        return "null"
    return str(net.encoder_weights)


def train_run(plan: Plan, name: str, overrides: list[str]) -> dict[str, Any]:
    """``medmtl-train <overrides>`` in its own folder; its throughput, metrics and time."""
    run_dir = plan.out_dir / name
    cmd = [sys.executable, "-m", "medmtl.cli.train", *plan.base, *overrides,
           f"hydra.run.dir={run_dir}"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    out: dict[str, Any] = {
        "command": " ".join(cmd[3:]),
        "seconds": round(time.perf_counter() - start, 1),
    }
    if done.returncode != 0:
        errors = [ln for ln in done.stderr.splitlines() if ln.strip()]
        failed = run_dir / "failed.json"
        reason = json.loads(failed.read_text())["error"] if failed.exists() else None
        out["error"] = reason or (errors[-1] if errors else f"exit {done.returncode}")
        return out
    throughput = run_dir / "throughput.json"
    if throughput.exists():
        out.update(json.loads(throughput.read_text()))
    metrics_file = run_dir / "metrics.json"
    if metrics_file.exists():
        metrics = json.loads(metrics_file.read_text())
        out["precision"] = metrics.get("trainer/precision")
        out["wall_s"] = metrics.get("wall_time_s")
    return out


def check_cell(plan: Plan, arch: str, encoder: str, mixed: str) -> dict[str, Any]:
    """The fp32 steps and the mixed-precision epoch of one study cell."""
    name = f"{arch}+{encoder}"
    weights = "null" if plan.dry else _weights(encoder)
    model = [f"model/arch={arch}", f"model/encoder={encoder}", f"model.encoder.weights={weights}"]
    fp32 = train_run(plan, f"{name}/fp32", [*model, "trainer.precision=32-true",
                     "trainer.max_epochs=1", f"+trainer.limit_train_batches={plan.fp32_steps + 3}",
                     "+trainer.limit_val_batches=1", "test=false"])  # fmt: skip
    epoch = train_run(plan, f"{name}/mixed", [*model, f"trainer.precision={mixed}",
                      "trainer.max_epochs=1", "test=false"])  # fmt: skip
    return {"cell": name, "weights": weights, "fp32": fp32, "mixed": epoch}


def check_ddp(plan: Plan, arch: str, encoder: str, mixed: str, single: dict) -> dict[str, Any]:
    """The first cell's epoch on two GPUs (DDP) and its speed-up over one."""
    model = [f"model/arch={arch}", f"model/encoder={encoder}", "model.encoder.weights=null"]
    ddp = train_run(plan, f"{arch}+{encoder}/ddp2",
                    [*model, "trainer=ddp", "trainer.devices=2", f"trainer.precision={mixed}",
                     "trainer.max_epochs=1", "test=false"])  # fmt: skip
    one, two = single.get("images_per_s"), ddp.get("images_per_s")
    if one and two:
        # each rank counts its own images: the pair trains twice as many in the same time
        ddp["speedup"] = round(2 * two / one, 2)
    return ddp


def chosen_cells(names: list[str] | None) -> tuple[tuple[str, str], ...]:
    """The cells ``cells=`` names (``arch+encoder``; None: all of :data:`CELLS`), or one line
    naming the unknown one."""
    if names is None:
        return CELLS
    known = {f"{a}+{e}": (a, e) for a, e in CELLS}
    for name in names:
        choice("cells", name, tuple(known))
    return tuple(known[n] for n in names)


def run(
    dry: bool, busi_root: Path, out: Path, cells: tuple[tuple[str, str], ...] = CELLS
) -> tuple[dict[str, Any], bool]:
    """The whole check, its report written to ``out`` (JSON); returns the report and whether
    everything passed."""
    report, passed = _check(dry, busi_root, out, cells)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=1))
    return report, passed


def _check(
    dry: bool, busi_root: Path, out: Path, cells: tuple[tuple[str, str], ...]
) -> tuple[dict[str, Any], bool]:
    import torch

    plan = Plan(dry, Path(busi_root), out.parent / out.stem)
    report: dict[str, Any] = {"dry": dry, **versions(), "cells": []}
    if not dry and not torch.cuda.is_available():
        from medmtl.training.gpu import gpu_problem

        report["error"] = (
            f"{gpu_problem(1)}; scripts/gpu-check --dry runs the same steps on the CPU"
        )
        return report, False
    mixed = _mixed_precision(dry)
    for arch, encoder in cells:
        report["cells"].append(check_cell(plan, arch, encoder, mixed))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus >= 2:
        arch, encoder = cells[0]
        report["ddp"] = check_ddp(plan, arch, encoder, mixed, report["cells"][0]["mixed"])
    else:
        report["ddp"] = {"skipped": f"{gpus} GPU(s): DDP needs two"}
    failures = [
        f"{c['cell']} {what}: {r['error']}"
        for c in report["cells"]
        for what, r in c.items()
        if isinstance(r, dict) and "error" in r
    ]
    if "error" in report["ddp"]:
        failures.append(f"ddp: {report['ddp']['error']}")
    report["failures"] = failures
    return report, not failures


def summary(report: dict[str, Any]) -> str:
    """The report as a few lines for the terminal."""
    lines = [report["machine"], f"torch {report['torch']}, CUDA {report['cuda']}, "
             f"cuDNN {report['cudnn']}, GPUs: {report['gpus'] or 'none'}"]  # fmt: skip
    if report.get("error"):
        return "\n".join([*lines, f"FAILED: {report['error']}"])
    for cell in report["cells"]:
        for what, r in cell.items():
            if not isinstance(r, dict):
                continue
            if "error" in r:
                lines.append(f"{cell['cell']:28s} {what:10s} FAILED: {r['error']}")
                continue
            metrics = r.get("val", {})
            lines.append(
                f"{cell['cell']:28s} {what:5s} {r.get('precision') or ''} {r.get('images_per_s')} "
                f"images/s, waited for "
                f"data {100 * (r.get('data_wait_share') or 0):.1f} %, peak "
                f"{r.get('peak_gpu_mib', '–')} MiB"
                + (
                    f", val Dice {metrics.get('val/seg_dice', float('nan')):.3f} acc "
                    f"{metrics.get('val/cls_acc', float('nan')):.3f}"
                    if metrics
                    else ""
                )  # fmt: skip
            )
    ddp = report.get("ddp", {})
    lines.append(f"DDP: {ddp.get('skipped') or ddp.get('error') or str(ddp.get('speedup')) + 'x'}")
    lines.append("PASSED" if not report.get("failures") else f"FAILED: {len(report['failures'])}")
    return "\n".join(lines)

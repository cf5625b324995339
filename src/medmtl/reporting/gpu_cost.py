"""What each study table costs on common GPUs, on paper, from the rehearsal's measurements.

A job's time is its start-up, then per epoch its FLOPs at a stated share of the GPU's peak
plus a fixed per-epoch overhead (validation loop start, two checkpoints, logging). The FLOPs
are the rehearsal's (training step per image x training images + forward per image x
validation images); the numbers of images are BUSI's committed split; the epochs are
``profile=gpu``'s ``trainer.max_epochs`` (an upper bound: early stopping ends most jobs sooner).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gb: int
    bf16_tflops: float  # dense tensor-core peak, no sparsity (the vendor's data sheet)


GPUS = (
    Gpu("A100 40 GB (SXM)", 40, 312.0),
    Gpu("H100 80 GB (SXM)", 80, 989.0),
    Gpu("L4 24 GB", 24, 121.0),
)
# The share of the peak a study job reaches. NVIDIA's own ResNet-50 training reaches about 20 %
# of an A100's bf16 peak (about 2,600 images/s x 24.6 GFLOPs at batch 256 with DALI); a batch
# of 16 images of 256 px, segmentation decoders (memory-bound upsampling and concatenation)
# and per-step optimizer and metric work reach less: 15 % is assumed, for every card.
UTILISATION = 0.15
STARTUP_S = 60.0  # imports, the cached images read, cuDNN's algorithm search, first batches
EPOCH_OVERHEAD_S = 2.0  # validation loop start, best + last checkpoint, logging, per epoch


def job_seconds(train_gflops: float, forward_gflops: float, train_images: int,
                val_images: int, epochs: int, gpu: Gpu) -> float:  # fmt: skip
    """One job's estimated wall time on ``gpu`` (the final test pass is within the overhead)."""
    epoch_flops = (train_gflops * train_images + forward_gflops * val_images) * 1e9
    compute = epoch_flops / (gpu.bf16_tflops * 1e12 * UTILISATION)
    return STARTUP_S + epochs * (compute + EPOCH_OVERHEAD_S)


def cost_rows(
    rows: Sequence[Mapping[str, Any]], train_images: int, val_images: int, epochs: int
) -> list[dict[str, Any]]:
    """Per study (in the order of ``rows``, the rehearsal table's): jobs, PFLOPs of all its
    epochs, the largest job's training-step memory, and GPU-hours on each of :data:`GPUS`."""
    studies: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        studies.setdefault(str(row["study"]), []).append(row)
    out = []
    for study, jobs in studies.items():
        measured = [j for j in jobs if j.get("train_gflops") not in (None, "")]
        flops = sum(
            (float(j["train_gflops"]) * train_images + float(j["forward_gflops"]) * val_images)
            * epochs
            for j in measured
        )
        hours = {
            gpu.name: sum(
                job_seconds(
                    float(j["train_gflops"]),
                    float(j["forward_gflops"]),
                    train_images,
                    val_images,
                    epochs,
                    gpu,
                )  # fmt: skip
                for j in measured
            )
            / 3600
            for gpu in GPUS
        }
        out.append({
            "study": study,
            "jobs": len(jobs),
            "measured": len(measured),
            "pflops": flops * 1e9 / 1e15,
            "peak_mib": max((float(j["peak_train_mib"]) for j in measured), default=None),
            "hours": hours,
        })  # fmt: skip
    return out


def cost_markdown(
    rows: Sequence[Mapping[str, Any]], train_images: int, val_images: int, epochs: int
) -> str:
    """The cost table and the assumptions it rests on."""
    table = cost_rows(rows, train_images, val_images, epochs)
    head = " | ".join(f"GPU-h {g.name}" for g in GPUS)
    lines = [
        f"Per study: jobs x {epochs} epochs x ({train_images} training images x training-step "
        f"GFLOPs + {val_images} validation images x forward GFLOPs), from the rehearsal above. "
        f"GPU-hours at {UTILISATION:.0%} of each card's dense bf16 peak, plus {STARTUP_S:.0f} s "
        f"start-up a job and {EPOCH_OVERHEAD_S:.0f} s overhead an epoch (estimates, not "
        "measurements: `scripts/gpu-check` measures a card).",
        "",
        f"| study | jobs | PFLOPs | largest training step (fp32 MiB) | {head} |",
        "|---|---:|---:|---:|" + "---:|" * len(GPUS),
    ]
    for r in table:
        jobs = (
            str(r["jobs"])
            if r["measured"] == r["jobs"]
            else f"{r['jobs']} ({r['measured']} measured)"
        )
        peak = "–" if r["peak_mib"] is None else f"{r['peak_mib']:,.0f}"
        hours = " | ".join(f"{r['hours'][g.name]:.1f}" for g in GPUS)
        lines.append(f"| {r['study']} | {jobs} | {r['pflops']:,.1f} | {peak} | {hours} |")
    return "\n".join(lines) + "\n"

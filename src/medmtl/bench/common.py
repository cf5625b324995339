"""Timing helpers and the machine description written above every benchmark table."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from medmtl.io.files import replace_section

# the one-model CPU recipe: the "default CPU model" every benchmark measures, as conf/ defines it
CPU_MODEL_OVERRIDES = ("experiment=busi_cpu_single",)
# the study's network at its size (profile=gpu: Unet + ResNet50, 256 px); batch halved to keep
# the benchmark short on a CPU
STUDY_MODEL_OVERRIDES = ("profile=gpu", "model/encoder=resnet50", "data.batch_size=8")


@dataclass
class Timing:
    """Median and spread (min, max) of repeated wall-clock measurements, in seconds."""

    median: float
    low: float
    high: float
    repeats: int

    def ms(self) -> str:
        return f"{self.median * 1e3:.2f} ms ({self.low * 1e3:.2f}–{self.high * 1e3:.2f})"


def time_call(
    fn: Callable[[], object], repeats: int = 7, warmup: int = 1, min_time: float = 0.0
) -> Timing:
    """Run ``fn`` ``warmup`` times, then time ``repeats`` calls (each call repeated until it
    takes at least ``min_time`` seconds, so very fast calls are not dominated by timer noise)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        samples.append(elapsed / n)
    return Timing(statistics.median(samples), min(samples), max(samples), repeats)


@dataclass(frozen=True)
class ConfModel:
    """A network as the configs define it: MultiTaskNet arguments, input size, batch size."""

    label: str
    net: dict[str, Any]
    image_size: int
    batch: int


def conf_model(role: str, overrides: tuple[str, ...] | list[str]) -> ConfModel:
    """The network that ``medmtl-train <overrides>`` would build, with random weights (speed does
    not depend on them, and nothing is loaded or downloaded); ``role`` starts its label."""
    from medmtl.config import compose
    from medmtl.workflows.build import model_kwargs

    cfg = compose("train", [*overrides, "model.encoder.weights=null"])
    kw = model_kwargs(cfg.model).to_dict()  # MultiTaskNet's own arguments, below
    for key in ("encoder_study", "empty_mask_class", "postprocess"):
        kw.pop(key)
    decoder = kw["arch_kwargs"].get("decoder_channels")
    label = f"{kw['arch']} + {kw['encoder']}" + (
        f", decoder {'-'.join(map(str, decoder))}" if decoder else ""
    )
    return ConfModel(
        f"{role}: {label} (`{' '.join(overrides)}`)",
        kw,
        int(cfg.data.image_size),
        int(cfg.data.batch_size),
    )


def machine_line() -> str:
    """Date, CPU model, cores and library versions, for the header of a benchmark section."""
    cpu = platform.processor() or "unknown CPU"
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"model name\s*:\s*(.+)", text)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    import cv2
    import numpy
    import torch

    return (
        f"{date.today().isoformat()}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {numpy.__version__}, OpenCV {cv2.__version__}, torch {torch.__version__}"
    )


def publish(path: Path, name: str, text: str) -> None:
    """Print a benchmark section and write it into its Markdown file (docs/benchmarks.md)."""
    print(text)
    replace_section(path, name, text, title="medmtl benchmarks")
    print(f"written to {path}")

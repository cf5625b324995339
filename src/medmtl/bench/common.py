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


def replace_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the section between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# medmtl benchmarks\n"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)

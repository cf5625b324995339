"""How fast a run trains and how long it waits for its data, measured inside the run.

:class:`Throughput` is a Lightning callback (``+callbacks.throughput._target_=...``): between
the end of one training step and the start of the next the loop waits for the next batch
(the input pipeline); from a step's start to its end it computes. On a GPU each step end is
synchronised, so compute time is the GPU's and not the launch of its kernels. The first
``warmup`` steps (cuDNN's algorithm search, the allocator, worker start-up) are not counted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from medmtl.io.files import atomic_write_text


class Throughput(Callback):
    """Training images per second, the share of time spent waiting for data, the peak GPU
    memory and the last validation's metrics, written to ``<run>/throughput.json`` when
    training ends."""

    def __init__(self, warmup: int = 3) -> None:
        self.warmup = int(warmup)
        self.steps = self.images = 0
        self.wait = self.compute = 0.0
        self._start = self._last_end = None

    @staticmethod
    def _sync(pl_module: Any) -> None:
        import torch

        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._last_end = time.perf_counter()  # the first batch's wait counts from here

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._counting() and self._last_end is not None:
            self.wait += now - self._last_end
        self._start = now

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        self._sync(pl_module)
        now = time.perf_counter()
        if self._counting():
            self.compute += now - self._start
            self.images += int(batch["image"].shape[0])
        self.steps += 1
        self._last_end = now

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._last_end = None  # validation is not the training loader's wait

    def _counting(self) -> bool:
        return self.steps >= self.warmup

    def result(self, device: str = "cpu") -> dict[str, Any]:
        total = self.wait + self.compute
        out: dict[str, Any] = {
            "steps_counted": max(0, self.steps - self.warmup),
            "images": self.images,
            "images_per_s": round(self.images / total, 2) if total else None,
            "data_wait_share": round(self.wait / total, 4) if total else None,
        }
        if device == "cuda":
            import torch

            out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        out = self.result(pl_module.device.type)
        # the last validation's metrics (a check that trains without the test afterwards)
        out["val"] = {k: float(v) for k, v in trainer.callback_metrics.items()
                      if k.startswith("val/") and v.numel() == 1}  # fmt: skip
        path = Path(trainer.default_root_dir) / "throughput.json"
        atomic_write_text(path, json.dumps(out, indent=1))

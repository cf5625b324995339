"""``medmtl-bench data``: how many training images per second the input pipeline delivers.

The study's input at ``profile=gpu`` (BUSI at 256 px, the default augmentation, batch 16): the
deterministic part (decode, grey, CLAHE when set, resize) is done once and kept in memory by
the data module (:mod:`medmtl.data.cache`), so what a loader worker does for each image is the
random augmentation, normalisation and conversion to a tensor, and the batch's collation.

Measured: one worker's rate (the pipeline in this process, which is what each worker runs),
and the DataLoader with 1 and 2 worker processes as a GPU job runs it (persistent workers: a
warm-up pass starts them, then the median of three timed passes). Projected: a node's rate with N workers as N times
one worker's rate times the efficiency measured with two workers here (the assumption: the
node has a free core per worker, as ``num_workers=${medmtl_workers:}`` gives it).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmtl.bench.common import machine_line

OVERRIDES = ("profile=gpu", "data=busi")
PROJECTED_WORKERS = (2, 8, 16)
TARGET = 3000  # images/s an H100 must not wait for (docs/cluster.md)


@dataclass
class DataRates:
    image_size: int
    batch: int
    images: int
    one_worker: float  # images/s of the pipeline in one process
    loader: dict[int, float]  # worker processes -> images/s through the DataLoader
    eval_one_worker: float  # without augmentation (validation)
    raw_one_worker: float  # data.augment_on=device: the worker only collates cached images
    device_batch: float  # data.augment_on=device: the batch augmentation, on this CPU

    def efficiency(self) -> float:
        """Two workers' rate over twice one worker's (1.0: linear)."""
        two = self.loader.get(2)
        return min(1.0, two / (2 * self.one_worker)) if two else 1.0

    def projected(self, workers: int) -> float:
        return workers * self.one_worker * self.efficiency()


def _datamodule(busi_root: Path, cache_dir: Path, image_size: int) -> Any:
    from medmtl.config import compose
    from medmtl.data.build import datamodule_from_config

    cfg = compose("train", [*OVERRIDES, f"data.root={busi_root}", f"data.cache_dir={cache_dir}",
                            "data.num_workers=0", f"data.image_size={image_size}"])  # fmt: skip
    dm = datamodule_from_config(cfg.data)
    dm.prepare_data()
    dm.setup()
    return dm


def _pipeline_rate(dataset: Any, images: int, batch: int) -> float:
    """Images/s of the per-image work and collation, in this process."""
    from torch.utils.data import default_collate

    n = len(dataset)
    start = time.perf_counter()
    done = 0
    while done < images:
        items = [dataset[(done + i) % n] for i in range(batch)]
        default_collate(items)
        done += batch
    return done / (time.perf_counter() - start)


def _loader_rate(dm: Any, workers: int, images: int) -> float:
    """Images/s through the training DataLoader with ``workers`` processes (persistent, so the
    warm-up pass starts them and the timed passes do not)."""
    from medmtl.bench.training import loader_rate

    dm.loader = dataclasses.replace(dm.loader, num_workers=workers)
    batch = dm.loader.batch_size
    return batch / loader_rate(dm, max(1, images // batch), repeats=3).median


def run(
    busi_root: Path,
    cache_dir: Path,
    images: int = 512,
    image_size: int = 256,
    workers: tuple[int, ...] = (1, 2),
) -> DataRates:
    """The measurements (BUSI must be there: the pipeline's cost depends on the images)."""
    import torch

    from medmtl.errors import ConfigError

    if not Path(busi_root).is_dir():
        raise ConfigError(f"busi_root={busi_root}: not found; medmtl-bench data needs BUSI.")
    torch.set_num_threads(1)  # a worker process computes on one thread
    dm = _datamodule(Path(busi_root), Path(cache_dir), image_size)
    train = dm.dataset("train", train=True)
    batch = dm.loader.batch_size
    _pipeline_rate(train, batch, batch)  # warm-up
    one = _pipeline_rate(train, images, batch)
    evaluation = _pipeline_rate(dm.dataset("val"), images, batch)
    loader = {w: _loader_rate(dm, w, images) for w in workers}
    dm.loader = dataclasses.replace(dm.loader, num_workers=0, augment_on="device")
    raw = _pipeline_rate(dm.dataset("train", train=True), images, batch)
    device = _device_rate(dm, images)
    return DataRates(dm.preprocess.image_size, batch, images, one, loader, evaluation, raw, device)


def _device_rate(dm: Any, images: int) -> float:
    """Images/s of ``data.augment_on=device``'s batch augmentation and normalisation, here on
    the CPU (one thread, as above): what a GPU does far faster."""

    from medmtl.data import device_augment as da
    from medmtl.settings.data import Augment

    batch = next(iter(dm.train_dataloader()))
    augment, p = Augment.from_dict(dm.augment), dm.preprocess
    size = tuple(batch["image"].shape[2:])
    n = batch["image"].shape[0]
    start, done = time.perf_counter(), 0
    while done < images:
        params = da.draw(augment, n, size)
        x, _ = da.apply(batch["image"], batch["mask"], params)
        da.normalise(x, p.mean, p.std, p.standardize)
        done += n
    return done / (time.perf_counter() - start)


def section(r: DataRates, command: str) -> str:
    """The benchmark's Markdown section."""
    lines = [
        "## Input pipeline (what a GPU waits for)",
        "",
        f"`{command}` — {machine_line()}",
        "",
        f"BUSI training split at {r.image_size} px, `profile=gpu`'s augmentation, batch {r.batch}, "
        f"{r.images} images a measurement; images/s.",
        "",
        "| pipeline | images/s |",
        "|---|---:|",
        f"| one worker: augmentation, normalisation, tensors, collation (measured) | {r.one_worker:,.0f} |",
        f"| one worker, validation (no augmentation; measured) | {r.eval_one_worker:,.0f} |",
        f"| one worker with `data.augment_on=device`: collation of cached images only "
        f"(measured) | {r.raw_one_worker:,.0f} |",
        f"| `data.augment_on=device`: the batch's augmentation and normalisation on this CPU, "
        f"one thread (measured; on a GPU it is a few kernels) | {r.device_batch:,.0f} |",
    ]
    for w, rate in sorted(r.loader.items()):
        lines.append(
            f"| DataLoader, {w} worker process(es) on this machine (measured) | {rate:,.0f} |"
        )
    for w in PROJECTED_WORKERS:
        rate = r.projected(w)
        mark = "≥" if rate >= TARGET else "<"
        lines.append(
            f"| {w} workers on a GPU node (projected) | {rate:,.0f} ({mark} {TARGET:,} target) |"
        )
    lines += [
        "",
        f"Projection: N × one worker's rate × {r.efficiency():.2f}, the efficiency of two "
        "workers here (two workers' rate over twice one worker's); it assumes one free core per "
        "worker, which `data.num_workers=${medmtl_workers:}` (the job's CPUs less one) gives a "
        "GPU job.",
    ]
    return "\n".join(lines) + "\n"

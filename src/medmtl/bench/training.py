"""Training throughput against the machine's limit: matmul peak, FLOPs, model-only vs end-to-end,
data loader with and without the cache, and peak memory."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from medmtl.bench.common import (
    CPU_MODEL_OVERRIDES,
    STUDY_MODEL_OVERRIDES,
    ConfModel,
    Timing,
    conf_model,
    machine_line,
    time_call,
)
from medmtl.workflows.train import peak_memory_mb

N_IMAGES_NOTE = "8 validation images with their masks every epoch, the test table with thumbnails"
# tiny stand-ins for the tests: the same code paths in seconds
TINY_DECODER = (16, 16, 8, 8, 8)
TINY_SIZE, TINY_BATCH = 64, 4


def models(tiny: bool = False) -> list[ConfModel]:
    """The default CPU model and the study's model, as conf/ defines them."""
    out = [
        conf_model("default CPU model", CPU_MODEL_OVERRIDES),
        conf_model("study model", STUDY_MODEL_OVERRIDES),
    ]
    if tiny:
        out = [
            ConfModel(
                m.label + " [tiny]",
                {
                    **m.net,
                    "encoder": "tu-efficientnet_lite0",
                    "arch_kwargs": {"decoder_channels": TINY_DECODER},
                },
                TINY_SIZE,
                TINY_BATCH,
            )
            for m in out
        ]
    return out


def matmul_peak(n: int = 2048, repeats: int = 5) -> Timing:
    """Seconds per float32 n×n matmul (GFLOP/s = 2n³ / t)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return time_call(lambda: torch.mm(a, b), repeats=repeats, min_time=0.2)


def _step_fn(net, loss_fn, optimizer, x, mask, label):
    def step():
        optimizer.zero_grad(set_to_none=True)
        out = net(x)
        loss = loss_fn(out, mask, label)["loss"]
        loss.backward()
        optimizer.step()

    return step


def train_flops_per_image(net, loss_fn, size: int, batch: int = 2) -> float:
    """Training FLOPs per image: one forward and backward of a batch (the loss on random masks
    and labels), counted by :func:`medmtl.training.flops.flop_counter`, whose count of a
    grouped convolution's backward is right (torch's own counts a depthwise one as dense)."""
    from medmtl.training.flops import flop_counter

    x = torch.randn(batch, 1, size, size)
    mask = (torch.rand(batch, 1, size, size) > 0.5).float()
    label = torch.randint(0, 3, (batch,))
    counter = flop_counter()
    with counter:
        loss_fn(net(x), mask, label)["loss"].backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def model_only(
    net,
    loss_fn,
    size: int,
    batch: int,
    steps: int,
    repeats: int,
    channels_last: bool = False,
) -> Timing:
    """Seconds per training step on in-memory tensors (no data loading)."""
    x = torch.randn(batch, 1, size, size)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    mask = (torch.rand(batch, 1, size, size) > 0.5).float()
    label = torch.randint(0, 3, (batch,))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    step = _step_fn(net, loss_fn, opt, x, mask, label)

    def run():
        for _ in range(steps):
            step()

    t = time_call(run, repeats=repeats, warmup=1)
    return Timing(t.median / steps, t.low / steps, t.high / steps, t.repeats)


# Variants of the default CPU model's training step: (label, changes to the baseline).
SWITCHES = [
    ("baseline: the default CPU model, 2 threads", {}),
    ("1 thread", {"threads": 1}),
    ("channels-last memory format", {"channels_last": True}),
    ("batch 8", {"batch": 8}),
    ("batch 32", {"batch": 32}),
    ("default decoder (256, 128, 64, 32, 16)", {"decoder": (256, 128, 64, 32, 16)}),
    ("128 px", {"size": 128}),
    ("192 px", {"size": 192}),
]


def switches(
    base: ConfModel,
    threads: int,
    tiny: bool = False,
    compile_: bool = False,
    repeats: int = 3,
) -> list[dict]:
    """Model-only training throughput of the default CPU model with one thing changed at a time.

    ``torch.compile`` is measured only when asked (it costs minutes to compile here); its
    compile time is reported separately from the steady-state step.
    """
    from medmtl.models import MultiTaskNet
    from medmtl.training.losses import MultiTaskLoss

    kw, size, batch = base.net, base.image_size, base.batch
    decoder = kw["arch_kwargs"]["decoder_channels"]
    rows = SWITCHES + ([("torch.compile (default mode)", {"compile": True})] if compile_ else [])
    out = []
    for label, change in rows:
        b = change.get("batch", batch) if not tiny else batch
        px = change.get("size", size) if not tiny else size
        dec = change.get("decoder", decoder) if not tiny else decoder
        torch.set_num_threads(change.get("threads", threads))
        net = MultiTaskNet(**{**kw, "arch_kwargs": {"decoder_channels": dec}}).train()
        entry: dict = {"label": label, "size": px, "batch": b}
        if change.get("compile"):
            t0 = time.perf_counter()
            compiled = torch.compile(net)
            model_only(compiled, MultiTaskLoss(), px, b, steps=1, repeats=1)
            entry["compile_s"] = time.perf_counter() - t0
            net = compiled
        t = model_only(
            net,
            MultiTaskLoss(),
            px,
            b,
            steps=1 if tiny else 3,
            repeats=1 if tiny else repeats,
            channels_last=bool(change.get("channels_last")),  # the switch; its baseline: off
        )
        entry["ips"] = (b / t.median, b / t.high, b / t.low)
        out.append(entry)
    torch.set_num_threads(threads)
    base = out[0]["ips"][0]
    for e in out:
        e["speedup"] = e["ips"][0] / base
    return out


def end_to_end(net, loss_fn, dm, steps: int, repeats: int) -> Timing:
    """Seconds per training step drawing batches from the real data module's train loader."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loader = dm.train_dataloader()

    def run():
        it = iter(loader)
        for _ in range(steps):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(loader)
                batch = next(it)
            _step_fn(net, loss_fn, opt, batch["image"], batch["mask"], batch["label"])()

    t = time_call(run, repeats=repeats, warmup=1)
    return Timing(t.median / steps, t.low / steps, t.high / steps, t.repeats)


def loader_rate(dm, batches: int, repeats: int) -> Timing:
    """Seconds per batch from the train loader alone (cached arrays + augmentation)."""
    loader = dm.train_dataloader()

    def run():
        it = iter(loader)
        for _ in range(batches):
            try:
                next(it)
            except StopIteration:
                it = iter(loader)
                next(it)

    t = time_call(run, repeats=repeats, warmup=1)
    return Timing(t.median / batches, t.low / batches, t.high / batches, t.repeats)


def uncached_rate(dm, n: int, repeats: int) -> Timing:
    """Seconds per image to decode, convert and resize from the files (what the cache saves)."""
    from medmtl.data.cache import load_case

    cases = dm.index.cases[:n]
    t = time_call(lambda: [load_case(c, dm.preprocess) for c in cases], repeats=repeats, warmup=0)
    return Timing(t.median / n, t.low / n, t.high / n, t.repeats)


def wandb_overhead(busi_root: Path | None, cache_dir: Path, tiny: bool = False) -> dict:
    """Wall time of whole ``medmtl-train`` runs (training, test, logger shut-down) without W&B
    and with W&B offline and its media (validation masks every epoch, the test table, the
    figures); runs alternate, median of each. ``ratio`` = time without / time with."""
    import os
    import statistics
    import tempfile
    from unittest import mock

    from omegaconf import open_dict

    from medmtl.config import compose
    from medmtl.workflows.train import train

    if tiny:
        base = ["data=phantom", "data.phantom.counts={normal: 10, benign: 15, malignant: 15}",
                "data.phantom.size=96", "model/encoder=efficientnet_lite0", "data.image_size=64",
                "+model.arch.kwargs.decoder_channels=[32,16,16,8,8]", "trainer.max_epochs=1"]  # fmt: skip
        repeats = 1
    else:
        data = ["data=busi", f"data.root={busi_root}"] if busi_root else ["data=phantom"]
        base = ["experiment=busi_cpu_single", *data, "trainer.max_epochs=2"]
        repeats = 2
    base += ["seed=0", "trainer.precision=32-true", f"paths.cache_dir={cache_dir}"]
    kinds = {"without W&B": ["logger=csv"], "with W&B media": ["logger=wandb"]}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DATA_DIR=tmp),
    ):
        for r in range(repeats):
            for kind, extra in kinds.items():
                cfg = compose("train", base + extra)
                with open_dict(cfg):
                    cfg.paths.output_dir = str(Path(tmp) / f"{len(times[kind])}_{r}_{kind}")
                start = time.perf_counter()
                train(cfg)
                times[kind].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "runs": times,
        "median_s": med,
        "ratio": med["without W&B"] / med["with W&B media"],
        "setting": " ".join(
            "data.root=<BUSI>" if o.startswith("data.root=") else o for o in base[:-1]
        ),
        "data": "BUSI" if busi_root and not tiny else "phantom",
    }


def run(
    busi_root: Path | None,
    cache_dir: Path,
    tiny: bool = False,
    threads: int = 2,
    compile_: bool = False,
) -> dict:
    from medmtl.config import compose
    from medmtl.data.datamodule import MedDataModule
    from medmtl.models import MultiTaskNet
    from medmtl.training.losses import MultiTaskLoss

    torch.set_num_threads(threads)
    steps, repeats = (1, 2) if tiny else (4, 5)
    res: dict = {"threads": threads, "tiny": tiny}
    n = 256 if tiny else 2048
    mm = matmul_peak(n, repeats=2 if tiny else 5)
    res["peak_gflops"] = (
        2 * n**3 / mm.median / 1e9,
        2 * n**3 / mm.high / 1e9,
        2 * n**3 / mm.low / 1e9,
    )
    res["matmul_n"] = n
    res["models"] = {}
    measured = models(tiny)
    for m in measured:
        name, kw, size, batch = m.label, m.net, m.image_size, m.batch
        net = MultiTaskNet(**kw).train()
        loss_fn = MultiTaskLoss()
        flops = train_flops_per_image(net, loss_fn, size)
        slow = not tiny and size >= 256  # ~10 s per step here: fewer repeats
        mo = model_only(net, loss_fn, size, batch, 2 if slow else steps, 3 if slow else repeats)
        entry = {
            "repeats": 3 if slow else repeats,
            "size": size,
            "batch": batch,
            "flops_per_image": flops,
            "model_only_ips": (batch / mo.median, batch / mo.high, batch / mo.low),
        }
        entry["gflops"] = flops * entry["model_only_ips"][0] / 1e9
        entry["fraction_of_peak"] = entry["gflops"] / res["peak_gflops"][0]
        res["models"][name] = entry
    # the real data pipeline (the default CPU model's data settings), with that model
    base = measured[0]
    kw, size, batch = base.net, base.image_size, base.batch
    data = (
        ["data=busi", f"data.root={busi_root}"]
        if busi_root
        else [
            "data=phantom",
            "data.phantom.counts={normal: 12, benign: 14, malignant: 14}",
            "data.phantom.size=96",
        ]
    )
    cfg = compose(
        "train",
        [
            *CPU_MODEL_OVERRIDES,
            *data,
            f"data.image_size={size}",
            f"data.batch_size={batch}",
            f"paths.cache_dir={cache_dir}",
        ],
    )
    dm = MedDataModule.from_config(cfg.data)
    dm.setup()
    net = MultiTaskNet(**kw).train()
    loss_fn = MultiTaskLoss()
    mo = model_only(net, loss_fn, size, batch, steps, repeats)
    e2e = end_to_end(net, loss_fn, dm, steps, repeats)
    ld = loader_rate(dm, steps * 2, repeats)
    unc = uncached_rate(dm, 4 if tiny else 32, 1 if tiny else 3)
    res["pipeline"] = {
        "data": "BUSI" if busi_root else "phantom",
        "size": size,
        "batch": batch,
        "model_only_ips": batch / mo.median,
        "end_to_end_ips": batch / e2e.median,
        "end_to_end_spread": (batch / e2e.high, batch / e2e.low),
        "ratio": (batch / e2e.median) / (batch / mo.median),
        "loader_ips": batch / ld.median,
        "loader_spread": (batch / ld.high, batch / ld.low),
        "uncached_ips": 1 / unc.median,
        "uncached_spread": (1 / unc.high, 1 / unc.low),
    }
    res["pipeline"]["loader_vs_consumption"] = (
        res["pipeline"]["loader_ips"] / res["pipeline"]["end_to_end_ips"]
    )
    res["switches"] = switches(base, threads, tiny=tiny, compile_=compile_)
    res["peak_rss_gb"] = peak_memory_mb()["peak_rss_mb"] / 1024
    res["wandb"] = wandb_overhead(busi_root, cache_dir, tiny=tiny)
    return res


def section(r: dict, command: str, seconds: float) -> str:
    g = r["peak_gflops"]
    lines = [
        "## Training: throughput against the machine's limit",
        "",
        f"Command: `{command}` (took {seconds:.0f} s)  ",
        f"Machine: {machine_line()}, {r['threads']} torch threads  ",
        "Figures: median of 5 repeats (3 for the 256 px study model), min–max; images/s of a full training step "
        "(forward, backward, AdamW) in float32.",
        "",
        f"float32 matmul peak ({r['matmul_n']}×{r['matmul_n']} `torch.mm`): **{g[0]:.1f} GFLOP/s** ({g[1]:.1f}–{g[2]:.1f})",
        "",
        "Training FLOPs: one forward and backward counted by `torch.utils.flop_counter`, the "
        "backward of grouped (depthwise) convolutions counted right (`medmtl.training.flops`).",
        "",
        "| model | input | batch | training FLOPs / image | model-only images/s | GFLOP/s reached | share of matmul peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in r["models"].items():
        ips = e["model_only_ips"]
        lines.append(
            f"| {name} | {e['size']}×{e['size']} | {e['batch']} | {e['flops_per_image'] / 1e9:.2f} GFLOP | "
            f"{ips[0]:.2f} ({ips[1]:.2f}–{ips[2]:.2f}) | {e['gflops']:.1f} | {e['fraction_of_peak']:.0%} |"
        )
    p = r["pipeline"]
    lines += [
        "",
        f"Real data pipeline ({p['data']}, default CPU model, {p['size']} px, batch {p['batch']}):",
        "",
        "| measure | images/s |",
        "|---|---|",
        f"| model-only training (in-memory tensors) | {p['model_only_ips']:.2f} |",
        f"| end-to-end training (train DataLoader of the data module) | {p['end_to_end_ips']:.2f} ({p['end_to_end_spread'][0]:.2f}–{p['end_to_end_spread'][1]:.2f}) |",
        f"| data loader alone, cached arrays + augmentation | {p['loader_ips']:.0f} ({p['loader_spread'][0]:.0f}–{p['loader_spread'][1]:.0f}) |",
        f"| decode + convert + resize from the files (no cache) | {p['uncached_ips']:.0f} ({p['uncached_spread'][0]:.0f}–{p['uncached_spread'][1]:.0f}) |",
        "",
        f"End-to-end / model-only: **{p['ratio']:.3f}** (target ≥ 0.95). "
        f"Data loader / training consumption: **{p['loader_vs_consumption']:.0f}×** (target ≥ 10×). "
        f"Peak resident memory of this benchmark process (all models above): **{r['peak_rss_gb']:.2f} GB** "
        "(target ≤ 4 GB for the CPU recipe).",
        "",
        "What helps on this CPU: model-only training throughput of the default CPU model with one "
        "thing changed at a time (median of 3 repeats, min–max; different sizes or decoders "
        "are different amounts of work, so their images/s is not a like-for-like speed-up).",
        "",
        "| change | input | batch | images/s | × baseline |",
        "|---|---|---|---|---|",
    ]
    for e in r["switches"]:
        ips = e["ips"]
        note = f" (compile {e['compile_s']:.0f} s)" if "compile_s" in e else ""
        lines.append(
            f"| {e['label']}{note} | {e['size']}×{e['size']} | {e['batch']} | "
            f"{ips[0]:.2f} ({ips[1]:.2f}–{ips[2]:.2f}) | {e['speedup']:.2f} |"
        )
    if not any("compile_s" in e for e in r["switches"]):
        lines.append(
            "| torch.compile | not measured in this run (`medmtl-bench train --compile`) | | | |"
        )
    w = r["wandb"]
    lines += [
        "",
        f"W&B media (`logger=wandb`, offline: {N_IMAGES_NOTE}): whole `medmtl-train` runs on "
        f"{w['data']} (`{w['setting']}`), training, test and shut-down, alternating; median "
        "wall time.",
        "",
        "| run | wall time (s) | runs (s) |",
        "|---|---|---|",
        *(
            f"| {k} | {w['median_s'][k]:.2f} | {', '.join(f'{t:.2f}' for t in w['runs'][k])} |"
            for k in w["median_s"]
        ),
        "",
        f"Without / with W&B media: **{w['ratio']:.3f}** (target ≥ 0.95).",
        "",
    ]
    return "\n".join(lines)

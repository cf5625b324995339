"""Batch inference throughput, PyTorch eager vs ONNX Runtime, and the cold start of medmtl-predict."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medmtl.bench.common import CPU_MODEL_OVERRIDES, conf_model, machine_line, time_call


def make_checkpoint(path: Path, image_size: int, model: dict) -> Path:
    """A medmtl checkpoint of ``model`` (random weights: speed does not depend on them)."""
    from medmtl.training.module import MultiTaskModule

    module = MultiTaskModule(
        model=dict(model),
        loss={},
        optimizer={"_target_": "torch.optim.AdamW"},
        class_names=["normal", "benign", "malignant"],
        data={"image_size": image_size},
    )
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def _images(
    busi_root: Path | None, image_size: int, n: int, settings
) -> tuple[np.ndarray, str, list[Path]]:
    from medmtl.inference.core import load_for_model

    files: list[Path] = []
    if busi_root is not None and busi_root.is_dir():
        files = sorted((busi_root / "benign").glob("*).png"))[:n]
    if len(files) >= n:
        arr = np.stack([load_for_model(f, settings).model_input for f in files])
        return arr[:, None].astype(np.float32), f"{n} BUSI images", files
    rng = np.random.default_rng(0)
    return (
        rng.normal(0, 1, (n, 1, image_size, image_size)).astype(np.float32),
        f"{n} synthetic images",
        [],
    )


def run(
    busi_root: Path | None,
    image_size: int | None = None,
    n: int = 32,
    batch: int = 8,
    repeats: int = 5,
    threads: int = 2,
    compile_: bool = False,
) -> dict:
    from medmtl.inference.export import export_onnx
    from medmtl.inference.onnx_backend import OnnxBackend
    from medmtl.inference.torch_backend import TorchBackend

    torch.set_num_threads(threads)
    model = conf_model("default CPU model", CPU_MODEL_OVERRIDES)
    image_size = image_size or model.image_size
    tmp = Path(tempfile.mkdtemp(prefix="medmtl-bench-"))
    ckpt = make_checkpoint(tmp / "model.ckpt", image_size, model.net)
    tb = TorchBackend(ckpt, channels_last=False)
    onnx_path = export_onnx(ckpt, tmp / "model.onnx")
    ob = OnnxBackend(onnx_path, threads=threads)
    data, what, files = _images(busi_root, image_size, n, tb.settings)

    def over_all(run_fn):
        def go():
            for s in range(0, n, batch):
                run_fn(data[s : s + batch])

        return go

    results: dict = {
        "model": model.label,
        "images": what,
        "image_size": image_size,
        "batch": batch,
        "threads": threads,
    }
    t = time_call(over_all(tb.run), repeats=repeats)
    results["torch"] = (n / t.median, n / t.high, n / t.low)
    t = time_call(over_all(TorchBackend(ckpt, channels_last=True).run), repeats=repeats)
    results["torch_channels_last"] = (n / t.median, n / t.high, n / t.low)
    if compile_:
        compiled = TorchBackend(ckpt, channels_last=False)
        compiled.net = torch.compile(compiled.net)  # what run() calls
        start = time.perf_counter()
        compiled.run(data[:batch])
        results["compile_s"] = time.perf_counter() - start
        t = time_call(over_all(compiled.run), repeats=repeats)
        results["torch_compile"] = (n / t.median, n / t.high, n / t.low)
    t = time_call(over_all(ob.run), repeats=repeats)
    results["onnxruntime"] = (n / t.median, n / t.high, n / t.low)
    results["speedup"] = results["onnxruntime"][0] / results["torch"][0]

    one = files[0] if files else None
    if one is None:
        from PIL import Image

        one = tmp / "one.png"
        Image.fromarray((np.random.default_rng(0).random((475, 565)) * 255).astype(np.uint8)).save(
            one
        )
    cold = []
    for k in range(3):
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "medmtl.cli.predict",
                f"model={onnx_path}",
                f"input={one}",
                f"out={tmp / f'cold{k}'}",
            ],
            check=True,
            capture_output=True,
        )
        cold.append(time.perf_counter() - start)
    results["cold_start_s"] = (float(np.median(cold)), min(cold), max(cold))
    return results


def section(r: dict, command: str) -> str:
    def ips(key: str) -> str:
        med, lo, hi = r[key]
        return f"{med:.1f} ({lo:.1f}–{hi:.1f})"

    c = r["cold_start_s"]
    return "\n".join(
        [
            "## Inference: PyTorch eager vs ONNX Runtime",
            "",
            f"Command: `{command}`  ",
            f"Machine: {machine_line()}  ",
            f"Model: {r['model']}, {r['image_size']}×{r['image_size']} grey "
            f"input, both heads. Data: {r['images']}, batches of {r['batch']}, {r['threads']} threads. "
            "Images per second, median of 5 passes (min–max).",
            "",
            "| backend | images/s |",
            "|---|---|",
            f"| PyTorch eager | {ips('torch')} |",
            f"| PyTorch eager, channels-last (the default of `medmtl-predict`) | {ips('torch_channels_last')} |",
            f"| PyTorch, torch.compile (compile {r['compile_s']:.0f} s) | {ips('torch_compile')} |"
            if "torch_compile" in r
            else "| PyTorch, torch.compile | not measured in this run (`--compile`) |",
            f"| ONNX Runtime (CPU) | {ips('onnxruntime')} |",
            "",
            f"ONNX Runtime / PyTorch eager: **{r['speedup']:.2f}×** (goal ≥ 1.5×).  ",
            f"`medmtl-predict backend=onnx` on one BUSI-sized image from a cold start (new process, "
            f"import, model load, predict, write): **{c[0]:.2f} s** (min {c[1]:.2f}, max {c[2]:.2f}; goal < 3 s).",
            "",
        ]
    )

"""medmtl-predict: masks, overlays and predictions.csv for new images (PNG, JPEG, DICOM).

medmtl-predict ckpt_path=<run>/checkpoints/<best>.ckpt input=<file|folder> out=<folder>
               [tta=true] [explain=gradcam] [batch_size=8] [threshold=0.5] [frame=0]
medmtl-predict backend=onnx model=<file.onnx> input=... out=...   (no torch needed)
"""

from __future__ import annotations

from pathlib import Path

from medmtl.cli import report_files
from medmtl.cli.kv import REQUIRED, kv_main, parse_kv
from medmtl.errors import ConfigError

DEFAULTS = {
    "ckpt_path": None,
    "model": None,
    "backend": "torch",
    "input": REQUIRED,
    "out": REQUIRED,
    "tta": False,
    "explain": None,
    "batch_size": 8,
    "threshold": 0.5,
    "frame": 0,
    "threads": 0,
}


def _check_options(opts: dict) -> None:
    """Refuse values that cannot work, before the model is loaded."""
    from medmtl.inference.core import check_predict_options
    from medmtl.io.files import ensure_output_dir
    from medmtl.io.outputs import check_out_outside_input

    check_predict_options(opts["batch_size"], opts["threshold"])
    if opts["frame"] is None or opts["frame"] < 0:
        raise ConfigError(f"frame={opts['frame']}: must be 0 or more (the first frame is 0).")
    if opts["threads"] is None or opts["threads"] < 0:
        raise ConfigError(f"threads={opts['threads']}: must be 0 (torch's default) or more.")
    check_out_outside_input(Path(opts["input"]), Path(opts["out"]), out_option="out")
    ensure_output_dir(opts["out"], "out")


def _run(argv: list[str]) -> int:
    opts = parse_kv(argv, DEFAULTS)
    _check_options(opts)
    if opts["model"] and not opts["ckpt_path"]:
        opts["backend"] = "onnx"
    if opts["backend"] == "onnx":
        if not opts["model"]:
            raise ConfigError(
                "backend=onnx needs model=<file.onnx> (write one with medmtl-export)."
            )
        if opts["explain"]:
            raise ConfigError(
                "explain=gradcam needs the PyTorch backend (ckpt_path=...), not ONNX."
            )
        from medmtl.inference.onnx_backend import OnnxBackend

        backend = OnnxBackend(opts["model"], threads=opts["threads"] or None)
        explainer = None
    elif opts["backend"] == "torch":
        if not opts["ckpt_path"]:
            raise ConfigError(
                "give ckpt_path=<checkpoint.ckpt> (or backend=onnx model=<file.onnx>)."
            )
        import torch

        if opts["threads"]:
            torch.set_num_threads(int(opts["threads"]))
        from medmtl.inference.torch_backend import TorchBackend

        backend = TorchBackend(opts["ckpt_path"])
        explainer = None
        if opts["explain"] == "gradcam":
            from medmtl.inference.explain import GradCamExplainer

            in_ch = int(backend.hparams["model"].get("in_channels", 1))
            explainer = GradCamExplainer(backend.net, in_ch, backend.settings.image_size)
        elif opts["explain"]:
            raise ConfigError(f"explain={opts['explain']} is unknown; use explain=gradcam.")
    else:
        raise ConfigError(f"backend={opts['backend']} is unknown; choose torch or onnx.")

    from medmtl.inference.core import predict_paths

    summary = predict_paths(
        backend,
        Path(opts["input"]),
        Path(opts["out"]),
        tta=opts["tta"],
        explainer=explainer,
        batch_size=opts["batch_size"],
        threshold=opts["threshold"],
        frame=opts["frame"],
    )
    out = Path(opts["out"])
    print(
        f"{len(summary.rows)} image(s) predicted -> {out / 'predictions.csv'}; "
        f"{len(summary.failed)} failed; {len(summary.skipped)} skipped."
    )
    report_files(summary.skipped, summary.failed, "FAILED")
    return 1 if summary.failed else 0


def main(argv: list[str] | None = None) -> None:
    kv_main(__doc__, _run, argv)


if __name__ == "__main__":
    main()

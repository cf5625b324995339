"""medmtl-export: checkpoint -> ONNX (both outputs, dynamic batch, preprocessing in metadata).

medmtl-export ckpt_path=<run>/checkpoints/<best>.ckpt [format=onnx] [out=<file.onnx>] [opset=17]
"""

from __future__ import annotations

from pathlib import Path

from medmtl.cli.kv import REQUIRED, kv_main, parse_kv
from medmtl.errors import ConfigError

DEFAULTS = {"ckpt_path": REQUIRED, "format": "onnx", "out": None, "opset": 17}


def _run(argv: list[str]) -> int:
    opts = parse_kv(argv, DEFAULTS)
    if opts["format"] != "onnx":
        raise ConfigError(f"format={opts['format']} is not supported; use format=onnx.")
    from medmtl.inference.export import export_onnx

    out = Path(opts["out"]) if opts["out"] else Path(opts["ckpt_path"]).with_suffix(".onnx")
    path = export_onnx(opts["ckpt_path"], out, opset=opts["opset"])
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> None:
    kv_main(__doc__, _run, argv)


if __name__ == "__main__":
    main()

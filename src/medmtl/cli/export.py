"""medmtl-export: checkpoint -> ONNX (both outputs, dynamic batch, preprocessing in metadata).

medmtl-export ckpt_path=<run>/checkpoints/<best>.ckpt [format=onnx] [out=<file.onnx>] [opset=17]
"""

from __future__ import annotations

from medmtl.cli.kv import REQUIRED, kv_main, parse_kv

DEFAULTS = {"ckpt_path": REQUIRED, "format": "onnx", "out": None, "opset": 17}


def _run(argv: list[str]) -> int:
    opts = parse_kv(argv, DEFAULTS)
    from medmtl.workflows.predict import export

    path = export(opts["ckpt_path"], opts["out"], opts["format"], opts["opset"])
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> None:
    kv_main(__doc__, _run, argv)


if __name__ == "__main__":
    main()

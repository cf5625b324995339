"""medmtl-compare: draw the same images with ground truth and each model's mask, side by side.

medmtl-compare ckpt_paths=[stl.ckpt,mtl.ckpt] [split=test] [n=12] [out=compare_test.png] [data_root=...]
"""

from __future__ import annotations

from pathlib import Path

from medmtl.cli.kv import REQUIRED, kv_main, parse_kv

DEFAULTS = {"ckpt_paths": REQUIRED, "split": "test", "n": 12, "out": None, "data_root": None}


def _run(argv: list[str]) -> int:
    opts = parse_kv(argv, DEFAULTS)
    from medmtl.reporting.compare import compare_checkpoints
    from medmtl.reporting.figures import save_figure

    paths = opts["ckpt_paths"] if isinstance(opts["ckpt_paths"], list) else [opts["ckpt_paths"]]
    fig = compare_checkpoints(paths, opts["split"], opts["n"], opts["data_root"])
    out = Path(opts["out"] or f"compare_{opts['split']}.png")
    save_figure(fig, out)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> None:
    kv_main(__doc__, _run, argv)


if __name__ == "__main__":
    main()

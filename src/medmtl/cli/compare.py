"""medmtl-compare: draw the same images with ground truth and each model's mask, side by side.

medmtl-compare ckpt_paths=[stl.ckpt,mtl.ckpt] [split=test] [n=12] [out=compare_test.png] [data_root=...]
"""

from __future__ import annotations

from medmtl.cli.kv import REQUIRED, kv_main, parse_kv

DEFAULTS = {"ckpt_paths": REQUIRED, "split": "test", "n": 12, "out": None, "data_root": None}


def _run(argv: list[str]) -> int:
    opts = parse_kv(argv, DEFAULTS)
    from medmtl.workflows.compare import compare_to_file

    paths = opts["ckpt_paths"] if isinstance(opts["ckpt_paths"], list) else [opts["ckpt_paths"]]
    out = compare_to_file(paths, opts["split"], opts["n"], opts["out"], opts["data_root"])
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> None:
    kv_main(__doc__, _run, argv)


if __name__ == "__main__":
    main()

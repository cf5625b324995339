"""medmtl-compare: draw the same images with ground truth and each model's mask, side by side.

medmtl-compare ckpt_paths=[stl.ckpt,mtl.ckpt] [split=test] [n=12] [out=compare_test.png] [data_root=...]
medmtl-compare evals=[<eval folder>,<eval folder>] [n=8] [out=compare_evaluations.png]
  two medmtl-eval runs of the same images with save_masks=true (e.g. two models on another
  hospital's images): the images where the second beats the first most, then the reverse
"""

from __future__ import annotations

from medmtl.cli.kv import kv_main, parse_kv
from medmtl.errors import ConfigError

DEFAULTS = {
    "ckpt_paths": None,
    "evals": None,
    "split": "test",
    "n": 0,  # 0: 12 images of a split, 8 disagreements of two evaluations
    "out": None,
    "data_root": None,
}


def _run(argv: list[str]) -> int:
    opts = parse_kv(argv, DEFAULTS)
    if opts["n"] is None or opts["n"] < 0:
        raise ConfigError(f"n={opts['n']}: the number of images, 1 or more (0: the default).")
    if opts["evals"] is not None:
        if opts["ckpt_paths"] is not None or opts["data_root"] is not None:
            raise ConfigError("evals= draws two evaluations: drop ckpt_paths= and data_root=.")
        from medmtl.workflows.compare import compare_evaluations_to_file

        evals = opts["evals"] if isinstance(opts["evals"], list) else [opts["evals"]]
        out = compare_evaluations_to_file(evals, opts["n"] or 8, opts["out"])
        print(f"wrote {out}")
        return 0
    if opts["ckpt_paths"] is None:
        raise ConfigError("give ckpt_paths=[a.ckpt,b.ckpt] or evals=[<eval folder>,<eval folder>].")
    from medmtl.workflows.compare import compare_to_file

    opts["n"] = opts["n"] or 12
    paths = opts["ckpt_paths"] if isinstance(opts["ckpt_paths"], list) else [opts["ckpt_paths"]]
    out = compare_to_file(paths, opts["split"], opts["n"], opts["out"], opts["data_root"])
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> None:
    kv_main(__doc__, _run, argv)


if __name__ == "__main__":
    main()

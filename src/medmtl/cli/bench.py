"""medmtl-bench: measure and write docs/benchmarks.md.

medmtl-bench preprocess [out=docs/benchmarks.md] [busi_image=PATH]
medmtl-bench inference [busi_root=DIR] [images=N] [image_size=PX] [compile=true]
medmtl-bench train [busi_root=DIR] [compile=true] [tiny=true]
medmtl-bench probe [busi_root=DIR] [out=docs/results.md]
medmtl-bench serve [busi_root=DIR] [requests=200] [clients=4]
medmtl-bench data [busi_root=DIR] [images=512]
medmtl-bench gpu [dry=true] [json=FILE]   (scripts/gpu-check)
(--out PATH, --tiny ... are the same options.)
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

from medmtl.cli.options import command_main, option_lines, parse, usage
from medmtl.config import compose, project_root
from medmtl.errors import ConfigError
from medmtl.settings.commands import BENCHES, BenchSettings

PROG = "medmtl-bench"


def _help() -> str:
    sections = [
        (f"{what}: {text}", option_lines(cls, "what")[len(fields(BenchSettings)) - 1 :])
        for what, (cls, text) in BENCHES.items()
    ]
    shared = option_lines(BenchSettings, "what")
    return usage(PROG, __doc__, shared, "<measurement> [key=value ...]", sections)


def _settings(argv: list[str]) -> SimpleNamespace:
    """The measurement's settings, with the defaults that depend on this checkout filled in."""
    words = [a for a in argv if "=" not in a and not a.startswith("-")]
    if not words or words[0] not in BENCHES:
        raise ConfigError(
            f"{PROG}: the first argument must be one of {', '.join(BENCHES)} "
            f"(got {words[0] if words else 'nothing'})."
        )
    settings = parse(argv, BENCHES[words[0]][0], positional="what")
    if len(settings.what) != 1:
        raise ConfigError(f"{PROG}: one measurement at a time, not {' '.join(settings.what)}.")
    values = settings.to_dict()
    values["what"] = settings.what[0]
    docs = project_root() / "docs"
    values["out"] = Path(
        values["out"] or docs / ("results.md" if values["what"] == "probe" else "benchmarks.md")
    )
    # BUSI_ROOT, else data/ in the repo
    busi = Path(values["busi_root"] or compose("train", ["data=busi"]).data.root)
    values["busi_root"] = busi
    if "busi_image" in values:
        values["busi_image"] = Path(values["busi_image"] or busi / "benign" / "benign (1).png")
    if "cache_dir" in values:
        values["cache_dir"] = Path(values["cache_dir"] or project_root() / ".cache")
    return SimpleNamespace(**values)


def main(argv: list[str] | None = None) -> int:
    return command_main(PROG, __doc__, lambda a: _main(_settings(a)), argv, _help, exit=False)


def _main(args: SimpleNamespace) -> int:
    from medmtl.bench.common import publish

    if args.what == "serve":
        from medmtl.bench import serve

        res = serve.run(args.busi_root, args.requests, args.clients)
        cmd = "BUSI_ROOT=<BUSI> medmtl-bench serve" + (
            f" requests={args.requests} clients={args.clients}"
            if (args.requests, args.clients) != (200, 4)
            else ""
        )
        publish(args.out, "serve", serve.section(res, cmd))
        return 0

    if args.what == "data":
        from medmtl.bench import data

        rates = data.run(args.busi_root, args.cache_dir, args.images, args.image_size)
        cmd = (
            "BUSI_ROOT=<BUSI> medmtl-bench data"
            + (f" images={args.images}" if args.images != 512 else "")
            + (f" image_size={args.image_size}" if args.image_size != 256 else "")
        )
        publish(args.out, "data", data.section(rates, cmd))
        return 0

    if args.what == "gpu":
        import time

        from medmtl.bench import gpu

        root = Path(compose("train").paths.log_dir) / "gpu-check"
        out = Path(args.json) if args.json else root / time.strftime("%Y-%m-%d_%H-%M-%S.json")
        report, passed = gpu.run(args.dry, args.busi_root, out, gpu.chosen_cells(args.cells))
        print(gpu.summary(report))
        print(f"written: {out}")
        return 0 if passed else 1

    if args.what == "probe":
        from medmtl.bench import probe

        rows = probe.run(args.busi_root, args.cache_dir, args.image_size)
        text = probe.section(rows, "BUSI_ROOT=<BUSI> medmtl-bench probe", args.image_size)
        publish(args.out, "probe", text)
        return 0

    if args.what == "train":
        import time

        from medmtl.bench import training

        start = time.time()
        root = args.busi_root if args.busi_root.is_dir() and not args.tiny else None
        res = training.run(root, args.cache_dir, tiny=args.tiny, compile_=args.compile)
        cmd = (
            "BUSI_ROOT=<BUSI> medmtl-bench train"
            + (" tiny=true" if args.tiny else "")
            + (" compile=true" if args.compile else "")
        )
        text = training.section(res, cmd, time.time() - start)
        publish(args.out, "train", text)
        return 0

    if args.what == "inference":
        from medmtl.bench import inference

        res = inference.run(
            args.busi_root,
            args.image_size,
            args.images,
            repeats=args.repeats,
            compile_=args.compile,
        )
        cmd = "BUSI_ROOT=<BUSI> medmtl-bench inference" + (" compile=true" if args.compile else "")
        text = inference.section(res, cmd)
        publish(args.out, "inference", text)
        return 0

    from medmtl.bench import preprocess

    rows, images = preprocess.run(args.busi_image, args.repeats)
    command = (
        "medmtl-bench preprocess"
        if "BUSI" not in images
        else "BUSI_ROOT=<BUSI> medmtl-bench preprocess"
    )
    text = preprocess.section(rows, images, command)
    publish(args.out, "preprocess", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""medmtl-bench: measure and write docs/benchmarks.md.

medmtl-bench preprocess [--out docs/benchmarks.md] [--busi-image PATH]
medmtl-bench inference [--busi-root DIR] [--images N] [--image-size PX] [--compile]
medmtl-bench train [--busi-root DIR] [--compile] [--tiny]
medmtl-bench probe [--busi-root DIR] [--out docs/results.md]
medmtl-bench serve [--busi-root DIR] [--requests 200] [--clients 4]
"""

from __future__ import annotations

import sys
from pathlib import Path

from medmtl.cli import ArgumentParser, run_or_exit
from medmtl.config import compose, project_root


def main(argv: list[str] | None = None) -> int:
    return run_or_exit(_main, argv)


def _main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="medmtl-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("preprocess", help="HE, CLAHE and 8-bit conversion timings")
    p.add_argument("--out", type=Path, default=project_root() / "docs" / "benchmarks.md")
    busi = Path(compose("train", ["data=busi"]).data.root)  # BUSI_ROOT, else data/ in the repo
    p.add_argument("--busi-image", type=Path, default=busi / "benign" / "benign (1).png")
    p.add_argument("--repeats", type=int, default=7)
    q = sub.add_parser("inference", help="PyTorch vs ONNX Runtime throughput, predict cold start")
    q.add_argument("--out", type=Path, default=project_root() / "docs" / "benchmarks.md")
    q.add_argument("--busi-root", type=Path, default=busi)
    q.add_argument("--images", type=int, default=32)
    q.add_argument("--image-size", type=int, default=None, help="default: the CPU model's")
    q.add_argument("--repeats", type=int, default=5)
    q.add_argument(
        "--compile", action="store_true", help="also measure torch.compile (minutes to compile)"
    )
    t = sub.add_parser("train", help="matmul peak, FLOPs, model-only vs end-to-end, loader, memory")
    t.add_argument("--out", type=Path, default=project_root() / "docs" / "benchmarks.md")
    t.add_argument("--busi-root", type=Path, default=busi)
    t.add_argument("--cache-dir", type=Path, default=project_root() / ".cache")
    t.add_argument("--tiny", action="store_true", help="tiny models and data (for the tests)")
    t.add_argument(
        "--compile", action="store_true", help="also measure torch.compile (minutes to compile)"
    )
    r = sub.add_parser("probe", help="linear probe: offline ImageNet weights vs random (BUSI)")
    r.add_argument("--out", type=Path, default=project_root() / "docs" / "results.md")
    r.add_argument("--busi-root", type=Path, default=busi)
    r.add_argument("--cache-dir", type=Path, default=project_root() / ".cache")
    r.add_argument("--image-size", type=int, default=224)
    s = sub.add_parser("serve", help="medmtl-serve under load: latency, throughput, memory")
    s.add_argument("--out", type=Path, default=project_root() / "docs" / "benchmarks.md")
    s.add_argument("--busi-root", type=Path, default=busi)
    s.add_argument("--requests", type=int, default=200)
    s.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    from medmtl.bench.common import publish

    if args.what == "serve":
        from medmtl.bench import serve

        res = serve.run(args.busi_root, args.requests, args.clients)
        cmd = "BUSI_ROOT=<BUSI> medmtl-bench serve" + (
            f" --requests {args.requests} --clients {args.clients}"
            if (args.requests, args.clients) != (200, 4)
            else ""
        )
        publish(args.out, "serve", serve.section(res, cmd))
        return 0

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
            + (" --tiny" if args.tiny else "")
            + (" --compile" if args.compile else "")
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
        cmd = "BUSI_ROOT=<BUSI> medmtl-bench inference" + (" --compile" if args.compile else "")
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

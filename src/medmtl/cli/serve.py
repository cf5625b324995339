"""medmtl-serve: a web page and a JSON API for one model (a research tool, not a diagnosis).

medmtl-serve [model=<model.onnx | checkpoint.ckpt>] [host=127.0.0.1] [port=8000]
             [max_upload_mb=50] [auth_token=<secret>] [threads=0] [tta=false]

Without model= it serves the model of the newest `make demo` run. The page is at
http://<host>:<port>/, the API documentation at /docs. It listens on this machine only unless
host= says otherwise; beyond it, give auth_token= (requests then need
'Authorization: Bearer <token>').
"""

from __future__ import annotations

from pathlib import Path

from medmtl.cli.kv import kv_main, parse_kv

DEFAULTS = {
    "model": None,
    "host": "127.0.0.1",
    "port": 8000,
    "max_upload_mb": 50.0,
    "auth_token": None,
    "threads": 0,
    "tta": False,
}


def _run(argv: list[str]) -> int:
    opts = parse_kv(argv, DEFAULTS)
    from medmtl.workflows.serve import ServeSettings, find_demo_model, serve

    model = opts["model"]
    if not model:
        from medmtl.config import compose

        model = find_demo_model(Path(compose("train").paths.log_dir))
        print(f"medmtl-serve: no model= given; serving the newest make-demo model {model}")
    serve(ServeSettings(**{**opts, "model": str(model)}))
    return 0


def main(argv: list[str] | None = None) -> None:
    kv_main(__doc__, _run, argv, needs_args=False)  # no argument: the make-demo model


if __name__ == "__main__":
    main()

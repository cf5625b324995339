"""medmtl-serve: a web page and a JSON API for one model (a research tool, not a diagnosis).

medmtl-serve [model=<model.onnx | checkpoint.ckpt>] [host=127.0.0.1] [port=8000]
             [max_upload_mb=50] [auth_token=<secret>] [threads=0] [tta=false]
             [site_dir=<folder>]

Without model= it serves the model of the newest `make demo` run. The page is at
http://<host>:<port>/, the API documentation at /docs. It listens on this machine only unless
host= says otherwise; beyond it, give auth_token= (requests then need
'Authorization: Bearer <token>').
With site_dir= the page lets a clinician correct a result (draw and erase the lesion, set the
class) and save the case to that folder on this machine, for medmtl-adapt.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from medmtl.cli.options import parse, settings_main
from medmtl.settings.commands import ServeSettings


def _run(argv: list[str]) -> int:
    settings = parse(argv, ServeSettings)
    from medmtl.workflows.serve import find_demo_model, serve

    if not settings.model:
        from medmtl.config import compose

        model = find_demo_model(Path(compose("train").paths.log_dir))
        print(f"medmtl-serve: no model= given; serving the newest make-demo model {model}")
        settings = replace(settings, model=str(model))
    serve(settings)
    return 0


def main(argv: list[str] | None = None) -> None:
    # no argument: the make-demo model
    settings_main("medmtl-serve", __doc__, ServeSettings, _run, argv, needs_args=False)


if __name__ == "__main__":
    main()

"""medmtl-export: checkpoint -> ONNX (both outputs, dynamic batch, preprocessing in metadata).

medmtl-export ckpt_path=<run>/checkpoints/<best>.ckpt [format=onnx] [out=<file.onnx>] [opset=17]
"""

from __future__ import annotations

from medmtl.cli.options import parse, settings_main
from medmtl.settings.commands import ExportSettings


def _run(argv: list[str]) -> int:
    settings = parse(argv, ExportSettings)
    from medmtl.workflows.predict import export

    path = export(settings.ckpt_path, settings.out, settings.format, settings.opset)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> None:
    settings_main("medmtl-export", __doc__, ExportSettings, _run, argv,
                  synopsis="ckpt_path=<checkpoint> [key=value ...]")  # fmt: skip


if __name__ == "__main__":
    main()

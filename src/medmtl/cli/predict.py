"""medmtl-predict: masks, overlays and predictions.csv for new images (PNG, JPEG, DICOM).

medmtl-predict ckpt_path=<run>/checkpoints/<best>.ckpt input=<file|folder|list.csv> out=<folder>
               [tta=true] [explain=gradcam] [batch_size=8] [threshold=0.5] [frame=0]
               [image_column=image]   (input=<list.csv>: a manifest; its columns are kept)
               [adapt=none|bn]   (bn: batch-norm statistics of all the inputs first, AdaBN)
medmtl-predict backend=onnx model=<file.onnx> input=... out=...   (no torch needed)
medmtl-predict model=<model folder> input=... out=...   (a W&B model artifact: its model.onnx, else model.ckpt)
"""

from __future__ import annotations

from pathlib import Path

from medmtl.cli import report_files
from medmtl.cli.options import parse, settings_main
from medmtl.settings.commands import PredictSettings


def _run(argv: list[str]) -> int:
    settings = parse(argv, PredictSettings)
    from medmtl.workflows.predict import predict

    summary = predict(settings)
    out = Path(settings.out)
    no_seg = f" ({len(summary.no_seg)} without a DICOM SEG)" if summary.no_seg else ""
    print(
        f"{len(summary.rows)} image(s) predicted{no_seg} -> {out / 'predictions.csv'}; "
        f"{len(summary.failed)} failed; {len(summary.skipped)} skipped."
    )
    if summary.shift is not None:
        from medmtl.workflows.shift import SHIFT_JSON, describe

        print(f"{describe(summary.shift)} -> {out / SHIFT_JSON}")
    if summary.label_order is not None:
        print(f"the order in which to label them -> {summary.label_order}")
    if settings.push:
        print(f"{len(summary.stored)} result(s) (SEG, SR) stored in the archive: "
              f"{', '.join(summary.stored)}")  # fmt: skip
    report_files(summary.skipped, [*summary.failed, *summary.no_seg], "FAILED")
    return 1 if summary.failed or summary.no_seg else 0


def main(argv: list[str] | None = None) -> None:
    settings_main("medmtl-predict", __doc__, PredictSettings, _run, argv,
                  synopsis="input=<file|folder|list.csv> out=<folder> [key=value ...]")  # fmt: skip


if __name__ == "__main__":
    main()

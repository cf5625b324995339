"""medmtl-predict and medmtl-export as jobs: pick the backend, predict a file or folder, export.

The ONNX path imports neither torch, Lightning nor Hydra: the PyTorch backend and the exporter
are imported only when asked for.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from medmtl import __version__
from medmtl.data.duplicates import near_copies
from medmtl.errors import ConfigError, DataError
from medmtl.inference.core import (
    ARTIFACT_CKPT,
    ARTIFACT_ONNX,
    PredictSummary,
    predict_paths,
)
from medmtl.inference.dicom_out import Algorithm, DicomOutput
from medmtl.io.dicomweb import StudyAddress, is_dicomweb, retrieve_study, store
from medmtl.io.dicomweb import client as dicomweb_client
from medmtl.io.files import ensure_output_dir
from medmtl.io.outputs import FolderPlan, check_out_outside_input, plan_files, plan_outputs
from medmtl.settings.commands import PredictSettings, check_adapt_backend
from medmtl.workflows.shift import shift_of_predictions

RETRIEVED = "retrieved"  # input=dicomweb://...: the study's images, in the output folder

log = logging.getLogger(__name__)


def check_options(opts: PredictSettings) -> None:
    """Refuse combinations that cannot work, before the model is loaded (each value was
    checked by :class:`~medmtl.settings.commands.PredictSettings`)."""
    check_adapt_backend(opts.adapt, opts.backend == "onnx" or not opts.ckpt_path)
    if not is_dicomweb(opts.input):  # an archive's study is retrieved into out itself
        check_out_outside_input(Path(opts.input), Path(opts.out), out_option="out")
    ensure_output_dir(opts.out, "out")


def open_onnx(path: str | Path, threads: int = 0) -> Any:
    """An exported model on ONNX Runtime (torch is not imported)."""
    from medmtl.inference.onnx_backend import OnnxBackend

    return OnnxBackend(path, threads=threads or None)


def open_checkpoint(path: str | Path, threads: int = 0) -> Any:
    """A checkpoint's network on PyTorch (``threads``: torch's CPU threads, 0 = its default)."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    from medmtl.inference.torch_backend import TorchBackend

    return TorchBackend(path)


def gradcam_for(backend: Any) -> Any:
    """Grad-CAM of a PyTorch backend's classification head."""
    from medmtl.inference.explain import GradCamExplainer
    from medmtl.models.checkpoint import stored_net

    in_ch = stored_net(backend.hparams).in_channels
    return GradCamExplainer(backend.net, in_ch, backend.settings.image_size)


def load_backend(opts: PredictSettings) -> tuple[Any, Any]:
    """The predictor backend (``backend=torch|onnx``) and the Grad-CAM explainer, if asked for
    (the values were checked by :class:`PredictSettings`)."""
    backend = "onnx" if opts.model and not opts.ckpt_path else opts.backend
    if backend == "onnx":
        if not opts.model:
            raise ConfigError(
                "backend=onnx needs model=<file.onnx> (write one with medmtl-export)."
            )
        if opts.explain:
            raise ConfigError(
                "explain=gradcam needs the PyTorch backend (ckpt_path=...), not ONNX."
            )
        return open_onnx(opts.model, opts.threads), None
    if not opts.ckpt_path:
        raise ConfigError("give ckpt_path=<checkpoint.ckpt> (or backend=onnx model=<file.onnx>).")
    torch_backend = open_checkpoint(opts.ckpt_path, opts.threads)
    explainer = gradcam_for(torch_backend) if opts.explain == "gradcam" else None
    return torch_backend, explainer


def listed_images(
    manifest: Path, out: Path, image_column: str = "image"
) -> tuple[FolderPlan, dict[str, dict[str, str]]]:
    """The images a manifest CSV lists (paths relative to its folder), their outputs under
    ``out`` by the same relative paths, and each row's other columns."""
    from medmtl.data.manifest import read_csv_rows

    manifest = manifest.expanduser().resolve()
    _, rows = read_csv_rows(manifest, (image_column,), "image list")
    files = [manifest.parent / r[image_column] for r in rows]
    columns = {
        str(f): {k: v for k, v in r.items() if k != image_column}
        for f, r in zip(files, rows, strict=True)
    }
    return plan_files(files, manifest.parent, out), columns


def adapt_to_inputs(
    backend: Any, inp: Path, out: Path, plan: FolderPlan | None, frame: int, batch: int = 32
) -> int:
    """``adapt=bn``: the PyTorch network's batch-norm statistics re-estimated on all the
    inputs first (AdaBN: a folder of another scanner's images at a time, no labels); returns
    the number of images used. An unreadable image is left for the prediction to report."""
    import numpy as np
    import torch

    from medmtl.inference.core import load_for_model
    from medmtl.models.adapt import adapt_batchnorm

    plan = plan or plan_outputs(inp, out, out_option="out")

    def batches():
        buf: list[np.ndarray] = []
        for src, _ in plan.items:
            try:
                buf.append(load_for_model(src, backend.settings, frame).model_input)
            except (DataError, OSError, ValueError, MemoryError):
                continue  # listed in not_predicted.csv by the prediction itself
            if len(buf) == batch:
                yield torch.from_numpy(np.stack(buf)[:, None])
                buf = []
        if buf:
            yield torch.from_numpy(np.stack(buf)[:, None])

    try:
        return adapt_batchnorm(backend.net, batches())
    except ValueError as exc:
        raise ConfigError(f"{inp}: {exc} (adapt=bn needs a folder of images)") from exc


def model_folder(opts: PredictSettings) -> PredictSettings:
    """``model=<folder>``: a model folder (a downloaded W&B model artifact) as the model it
    holds: its ``model.onnx`` on ONNX Runtime, else its ``model.ckpt`` on PyTorch (also when
    ``adapt=bn`` or ``explain=`` need PyTorch and the folder has both)."""
    if not opts.model or not Path(opts.model).is_dir():
        return opts
    folder = Path(opts.model)
    if opts.ckpt_path:
        raise ConfigError(f"model={folder} and ckpt_path= both name a model; give one.")
    onnx, ckpt = folder / ARTIFACT_ONNX, folder / ARTIFACT_CKPT
    wants_torch = opts.adapt != "none" or opts.explain
    if onnx.is_file() and not (wants_torch and ckpt.is_file()):
        return replace(opts, model=str(onnx), backend="onnx")
    if ckpt.is_file():
        return replace(opts, model=None, ckpt_path=str(ckpt), backend="torch")
    raise ConfigError(
        f"model={folder}: a folder without {ARTIFACT_ONNX} or {ARTIFACT_CKPT}; give a model "
        "artifact's folder (logger.wandb.log_model), an ONNX file or ckpt_path=<checkpoint>."
    )


def dicom_output(backend: Any, model: str | Path, seg_type: str = "binary") -> DicomOutput:
    """What ``dicom_seg=true`` writes for the model at ``model`` (refused for a model without
    a segmentation head)."""
    if backend.task == "cls":
        raise ConfigError("dicom_seg=true: this model has no segmentation head; drop it.")
    return DicomOutput(Algorithm.of_model(model, __version__), seg_type)


def predict_study(
    backend: Any,
    address: StudyAddress,
    archive: Any,
    out: Path,
    dicom: DicomOutput | None = None,
    push: bool = False,
    adapt: bool = False,
    **options: Any,
) -> PredictSummary:
    """Retrieve a study's ultrasound images from an archive into ``out/retrieved``, predict
    them into ``out`` (``options``: :func:`predict_paths`'s), list the other instances as
    skipped and, with ``push``, store the SEGs and then their reports back into the study."""
    retrieved = retrieve_study(address, out / RETRIEVED, archive)
    log.info("%s: %d ultrasound image(s) retrieved into %s; %d other instance(s) skipped",
             address, len(retrieved.files), out / RETRIEVED, len(retrieved.skipped))  # fmt: skip
    if not retrieved.files:
        raise DataError(f"{address}: no ultrasound images in this study; nothing to predict.")
    plan = plan_outputs(out / RETRIEVED, out, out_option="out")
    if adapt:
        n = adapt_to_inputs(backend, out / RETRIEVED, out, plan, options["frame"])
        log.info("adapt=bn: batch-norm statistics re-estimated on %d input image(s)", n)
    skipped = [(Path(where), why) for where, why in retrieved.skipped]
    summary = predict_paths(
        backend, out / RETRIEVED, out, plan=plan, dicom=dicom, skipped=skipped, **options
    )
    if push:
        # the SEGs first: a report is sent only once the segmentations it refers to are kept
        for key in ("seg_file", "sr_file"):
            files = [out / r[key] for r in summary.rows if r.get(key)]
            summary.stored += store(address, files, archive)
        log.info("%d SEG and SR instance(s) stored in %s", len(summary.stored), address)
    return summary


def predict(settings: PredictSettings | dict[str, Any]) -> PredictSummary:
    """Check the options, load the model and predict every image under ``input`` (a file, a
    folder, a manifest CSV listing the images, or a study of an image archive) into ``out``."""
    if not isinstance(settings, PredictSettings):
        settings = PredictSettings(**settings)
    opts = model_folder(settings)
    address = StudyAddress.parse(opts.input) if is_dicomweb(opts.input) else None
    check_options(opts)
    backend, explainer = load_backend(opts)
    dicom = None
    if opts.dicom_seg:
        dicom = dicom_output(backend, opts.ckpt_path or opts.model, opts.seg_type)
    out = Path(opts.out)
    adapt = opts.adapt == "bn"
    tta = backend.tta if opts.tta is None else opts.tta
    if opts.tta is None and tta:
        log.info("Test-time flip on, as the model was evaluated (tta=false turns it off)")
    options = {
        "tta": tta,
        "explainer": explainer,
        "batch_size": opts.batch_size,
        "threshold": opts.threshold,
        "frame": opts.frame,
    }
    if address is not None:
        archive = dicomweb_client(address.service, opts.token, opts.user)
        summary = predict_study(backend, address, archive, out, dicom, opts.push, adapt,
                                **options)  # fmt: skip
    else:
        plan = columns = None
        if Path(opts.input).suffix.lower() == ".csv":
            plan, columns = listed_images(Path(opts.input), out, opts.image_column)
        if adapt:
            n = adapt_to_inputs(backend, Path(opts.input), out, plan, opts.frame)
            log.info("adapt=bn: batch-norm statistics re-estimated on %d input image(s)", n)
        summary = predict_paths(
            backend, Path(opts.input), out, plan=plan, columns=columns, dicom=dicom, **options
        )
    # the predicted images' groups of near copies, for both tests of them together below
    groups = near_copies(summary.thumbs)
    # do these images, together, look like the model's training data? (shift.json). Not after
    # adapt=bn: the network's statistics are then the inputs' own, not its reference's
    if adapt:
        log.info("shift test: not run with adapt=bn (the network was adapted to these images).")
    else:
        summary.shift = shift_of_predictions(backend, summary.features, groups, out)
    if opts.label_order:
        summary.label_order = order_to_label(backend, summary, groups, out)
    return summary


def order_to_label(backend: Any, summary: Any, groups: list[int], out: Path) -> Path | None:
    """``label_order.csv`` of the predicted images (:mod:`medmtl.workflows.label_order`), given
    their near-copy ``groups``; None when no image was predicted."""
    from medmtl.workflows.label_order import write_label_order

    if not summary.rows:
        return None
    if len(summary.features) != len(summary.rows):
        raise ConfigError("label_order=true: this model gives no pooled features; export it again.")
    references = getattr(backend, "shift_references", None) or []
    return write_label_order(out, summary.rows, summary.features, groups, references)


def export(
    ckpt_path: str | Path, out: str | Path | None, fmt: str = "onnx", opset: int = 17
) -> Path:
    """Write the checkpoint as an ONNX model (default: beside the checkpoint, ``.onnx``)."""
    if fmt != "onnx":
        raise ConfigError(f"format={fmt} is not supported; use format=onnx.")
    from medmtl.inference.export import export_onnx

    target = Path(out) if out else Path(ckpt_path).with_suffix(".onnx")
    return export_onnx(ckpt_path, target, opset=opset)

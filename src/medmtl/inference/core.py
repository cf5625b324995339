"""Backend-independent prediction: preprocessing, TTA, outputs at the original size, overlays."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from medmtl.data.duplicates import thumbnail
from medmtl.errors import DataError, Stopped, WriteError
from medmtl.inference.dicom_out import (
    RESULT_SUFFIX,
    SEG_SUFFIX,
    SR_SUFFIX,
    DicomOutput,
    write_dicom_outputs,
)
from medmtl.io.files import CsvRows
from medmtl.io.image import read_image, to_grey
from medmtl.io.meta import ImageMeta
from medmtl.io.outputs import FolderPlan, plan_outputs, write_png
from medmtl.metrics import ANSWER_SEP, REASON_SEP, disagreement, entropy, refer_reasons
from medmtl.models.postprocess import PostProcess
from medmtl.models.shift import as_members
from medmtl.preprocess.pipeline import PreprocessSettings
from medmtl.settings.commands import check_predict_options
from medmtl.settings.data import Dedup

# a model folder (a W&B model artifact, logger.wandb.log_model): its checkpoint and ONNX export
ARTIFACT_CKPT, ARTIFACT_ONNX = "model.ckpt", "model.onnx"


class Backend(Protocol):
    """What a predictor backend provides."""

    settings: PreprocessSettings
    class_names: list[str]
    task: str
    tta: bool  # the test-time flip it was evaluated with: medmtl-predict's and the page's default
    shift_references: list  # the shift test's (medmtl.models.shift; empty: none)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """(B,1,S,S) float32 -> the network's outputs: ``seg`` mask logits (B,1,S,S) and ``cls``
        class logits (B,C) where the task has them, ``unlike_score`` (B,) where the model has
        one, an ensemble's ``member_cls`` (M,B,C) / ``member_seg`` (M,B,1,S,S)
        probabilities, and the pooled encoder ``features`` ((B,D); an ensemble (B,M,D))
        where the model has a shift reference (``shift_references``)."""
        ...


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class BatchPrediction:
    """A batch's probabilities and per-image uncertainty (None where the model has none)."""

    seg: np.ndarray | None  # (B,1,S,S) lesion probability
    cls: np.ndarray | None  # (B,C) class probabilities
    unlike_score: np.ndarray | None = None  # (B,) > 1: unlike the training data
    class_disagreement: np.ndarray | None = None  # (B,) members' / mirror's, 0..1
    mask_agreement: np.ndarray | None = None  # (B,) mean pairwise Dice of their masks
    mask_variance: np.ndarray | None = None  # (B,1,S,S) per-pixel variance of their maps
    # (B, M, D) pooled encoder features of the image itself (M members, 1 for one model): the
    # shift test's input (medmtl.models.shift); None where the model has no reference
    features: np.ndarray | None = None


def _flipped_back(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A mirror image's outputs on the image's grid: every map (ndim >= 4) flipped back."""
    return {k: v[..., ::-1] if v is not None and v.ndim >= 4 else v for k, v in out.items()}


def predict_batch(backend: Backend, batch: np.ndarray, tta: bool = False) -> BatchPrediction:
    """Mask and class probabilities and the uncertainty; with ``tta`` averaged with the
    horizontally flipped input (a single network's disagreement is then the mirror's)."""
    views = [backend.run(batch)]
    if tta:
        views.append(_flipped_back(backend.run(np.ascontiguousarray(batch[..., ::-1]))))
    seg = [sigmoid(v["seg"]) for v in views] if views[0].get("seg") is not None else None
    cls = [softmax(v["cls"]) for v in views] if views[0].get("cls") is not None else None

    def mean(key: str) -> np.ndarray | None:
        values = [v.get(key) for v in views]
        return None if any(x is None for x in values) else np.mean(values, axis=0)

    spread = {"member_cls": mean("member_cls"), "member_seg": mean("member_seg")}
    if len(views) > 1:
        spread.update(view_cls=None if cls is None else np.stack(cls))
        spread.update(view_seg=None if seg is None else np.stack(seg))
    found = disagreement(spread)
    maps = spread["member_seg"] if spread["member_seg"] is not None else spread.get("view_seg")
    unlike = mean("unlike_score")
    features = views[0].get("features")  # the image's own, not its mirror's
    features = None if features is None else as_members(features)
    return BatchPrediction(
        seg=None if seg is None else np.mean(seg, axis=0),
        cls=None if cls is None else np.mean(cls, axis=0),
        unlike_score=unlike if unlike is not None and np.isfinite(unlike).all() else None,
        class_disagreement=found.get("class_disagreement"),
        mask_agreement=found.get("mask_agreement"),
        mask_variance=None if maps is None else np.var(maps, axis=0),
        features=features,
    )


@dataclass
class LoadedImage:
    path: Path
    image8: np.ndarray  # display image, 8-bit grey at the original size
    model_input: np.ndarray  # (S, S) float32, normalised
    meta: ImageMeta
    thumb: np.ndarray | None = None  # the near-copy thumbnail (medmtl.data.duplicates)


def load_for_model(path: Path, settings: PreprocessSettings, frame: int = 0) -> LoadedImage:
    """Read and preprocess exactly as in training (conversion, CLAHE, resize, normalisation)."""
    raw, meta = read_image(path, frame=frame)
    grey = to_grey(raw)
    image8 = settings.to_uint8(grey, meta, str(path))
    model_input = settings.model_input(grey, meta, str(path))
    return LoadedImage(path, image8, model_input, meta, thumbnail(grey, Dedup().thumb_size))


def probability_at_size(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The model-grid probability map resized (bilinear) to an image of ``shape``."""
    h, w = shape
    return cv2.resize(prob.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def mask_at_original_size(
    prob: np.ndarray, shape: tuple[int, int], threshold: float = 0.5
) -> np.ndarray:
    """Resize the probability map (bilinear) to the image size, then threshold."""
    return probability_at_size(prob, shape) >= threshold


def level(threshold: float) -> int:
    """A threshold on the 8-bit probability map (0..255), rounded half up as the page does."""
    return int(np.floor(float(threshold) * 255 + 0.5))


@dataclass
class ImagePrediction:
    """One image's prediction at its own size (the web page and the JSON API)."""

    image8: np.ndarray  # (H, W) uint8: what is shown
    probability8: np.ndarray | None  # (H, W) uint8: the lesion probability map, 0..255
    class_prob: np.ndarray | None  # (C,) class probabilities
    meta: ImageMeta
    heatmap: np.ndarray | None = None  # (H, W) float in [0, 1]: Grad-CAM
    uncertainty: dict = field(default_factory=dict)  # :func:`uncertainty_row`
    variance8: np.ndarray | None = None  # (H, W) uint8: the pixel variance map, 0..255
    features: np.ndarray | None = None  # (M, D) pooled features, for the shift test
    thumb: np.ndarray | None = None  # its near-copy thumbnail, for the same

    def mask(self, threshold: float, postprocess: PostProcess) -> np.ndarray | None:
        """The lesion mask: the 8-bit probability map at ``threshold``, post-processed.

        The page re-thresholds the same 8-bit map in the browser with the same rule, so a
        slider position shows exactly the mask the API gives for that threshold.
        """
        if self.probability8 is None:
            return None
        return postprocess(self.probability8 >= level(threshold))


def predict_image(
    backend: Backend, path: Path, tta: bool = False, explainer=None, frame: int = 0
) -> ImagePrediction:
    """Read, preprocess as in training, and predict one image; DataError for a bad file."""
    li = load_for_model(path, backend.settings, frame)
    batch = li.model_input[None, None].astype(np.float32)
    pred = predict_batch(backend, batch, tta)
    seg_p, cls_p = pred.seg, pred.cls
    prob8 = variance8 = None
    if seg_p is not None:
        prob8 = _as8(probability_at_size(seg_p[0, 0], li.image8.shape))
    if pred.mask_variance is not None:  # a variance is at most 0.25: shown on the full scale
        variance8 = _as8(4 * probability_at_size(pred.mask_variance[0, 0], li.image8.shape))
    heat = None
    if explainer is not None and cls_p is not None:
        cam = explainer(batch, cls_p.argmax(1))[0]
        heat = probability_at_size(cam, li.image8.shape)
    return ImagePrediction(
        li.image8,
        prob8,
        None if cls_p is None else cls_p[0],
        li.meta,
        heat,
        uncertainty_row(backend, pred, 0),
        variance8,
        None if pred.features is None else pred.features[0],
        li.thumb,
    )


def _as8(prob: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(prob, 0, 1) * 255 + 0.5).astype(np.uint8)


def uncertainty_row(backend: Backend, pred: BatchPrediction, k: int) -> dict:
    """Image ``k``'s uncertainty as the predictions CSV and the API give it: ``entropy``, the
    conformal ``answer_set`` (class names joined by ``|``), ``unlike_score`` and
    ``unlike_training`` (score above 1), the members' or the mirror's ``class_disagreement``
    and ``mask_agreement``, and ``refer`` with its ``refer_reasons`` (the answer set is not
    one class, the scan is unlike the training data, or an ensemble's members disagree about
    the mask: :func:`medmtl.metrics.refer_reasons`); only what the model has."""
    row: dict = {}
    sets = None
    if pred.cls is not None:
        row["entropy"] = round(float(entropy(pred.cls[k])[0]), 6)
        answer_sets = getattr(backend, "answer_sets", None)
        if answer_sets is not None:
            sets = answer_sets.predict(pred.cls[k : k + 1])
            row["answer_set"] = ANSWER_SEP.join(
                c for c, on in zip(backend.class_names, sets[0], strict=True) if on
            )
    unlike = None
    if pred.unlike_score is not None:
        unlike = pred.unlike_score[k : k + 1]
        row["unlike_score"] = round(float(unlike[0]), 6)
        row["unlike_training"] = int(unlike[0] > 1)
    for name in ("class_disagreement", "mask_agreement"):
        value = getattr(pred, name)
        if value is not None:
            row[name] = round(float(value[k]), 6)
    agreement = pred.mask_agreement[k : k + 1] if pred.mask_agreement is not None else None
    why = refer_reasons(sets, unlike, agreement, getattr(backend, "min_mask_agreement", None),
                        backend.class_names)  # fmt: skip
    if why is not None:
        row["refer"] = int(bool(why[0]))
        row["refer_reasons"] = REASON_SEP.join(why[0])
    return row


def overlay(
    image8: np.ndarray, mask: np.ndarray | None, text: str, heatmap: np.ndarray | None = None
) -> np.ndarray:
    """RGB overlay: lesion fill and contour on the image, the class in a corner, and the
    Grad-CAM heatmap on the image beside it when given."""
    rgb = cv2.cvtColor(image8, cv2.COLOR_GRAY2RGB)
    out = rgb.copy()
    if mask is not None and mask.any():
        fill = out.copy()
        fill[mask] = (255, 60, 60)
        out = cv2.addWeighted(fill, 0.35, out, 0.65, 0)
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(out, contours, -1, (255, 230, 0), max(1, image8.shape[1] // 300))
    scale = max(0.4, image8.shape[1] / 900)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(
        out, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
    )
    if heatmap is not None:
        out = np.concatenate([out, heatmap_overlay(image8, heatmap)], axis=1)
    return out


def heatmap_overlay(image8: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """RGB: a Grad-CAM heatmap (values in [0, 1], the image's size) blended on the image."""
    colour = cv2.applyColorMap((np.clip(heatmap, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(colour, 0.45, cv2.cvtColor(image8, cv2.COLOR_GRAY2RGB), 0.55, 0)


@dataclass
class PredictSummary:
    """What a prediction did: a row per predicted input, the failed and the skipped ones.

    :meth:`add_row` and :meth:`add_failed` also write the row to ``predictions.csv`` or
    ``not_predicted.csv`` at once (when :func:`predict_paths` opened them), so the rows of
    finished images stay on disk whatever stops the run later.
    """

    rows: list[dict] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)  # push=true: SEGs the archive stored
    # dicom_seg=true: predicted DICOM images (with their PNGs) that got no SEG, and why
    no_seg: list[tuple[Path, str]] = field(default_factory=list)
    # each predicted image's pooled features (M, D), for the shift test of the whole input
    features: list[np.ndarray] = field(default_factory=list, repr=False)
    thumbs: list[np.ndarray] = field(default_factory=list, repr=False)  # and their thumbnails
    shift: Any = None  # the shift test of the predicted images (medmtl.models.shift.ShiftResult)
    label_order: Path | None = None  # label_order=true: the CSV of the order to label them in
    csvs: _ResultCsvs | None = field(default=None, repr=False, compare=False)

    def add_row(self, row: dict) -> None:
        self.rows.append(row)
        if row.get("seg_error"):
            self.no_seg.append((Path(row["file"]), row["seg_error"]))
        if self.csvs is not None:
            self.csvs.predicted(row)

    def add_failed(self, src: Path, reason: str) -> None:
        self.failed.append((src, reason))
        if self.csvs is not None:
            self.csvs.not_predicted(src, reason)


def predict_paths(
    backend: Backend,
    inp: Path,
    out: Path,
    tta: bool = False,
    explainer=None,
    batch_size: int = 8,
    threshold: float = 0.5,
    frame: int = 0,
    progress: bool = True,
    plan: FolderPlan | None = None,
    columns: dict[str, dict[str, str]] | None = None,
    dicom: DicomOutput | None = None,
    skipped: Sequence[tuple[Path, str]] = (),
) -> PredictSummary:
    """Predict every image under ``inp``; write masks, overlays and ``predictions.csv`` to ``out``.

    Every input gets its own outputs (``<name>_mask.png``, ``<name>_overlay.png``, named after
    the output plan of :func:`plan_outputs`, or ``plan`` when the inputs come from a list).
    ``columns`` (input path -> column -> value) adds the list's own columns to each row. An
    image that cannot be read or predicted is listed in ``not_predicted.csv`` with the reason
    and the others go on; ``skipped`` (path, why) are listed there too. Both CSVs are written row
    by row as the images finish, so they hold every finished image whatever stops the run.
    ``dicom`` also writes a DICOM SEG and its result sidecar for every DICOM input
    (:mod:`medmtl.inference.dicom_out`).
    """
    check_predict_options(batch_size, threshold)
    plan = plan or plan_outputs(Path(inp), Path(out), out_option="out")
    if not plan.items:
        raise DataError(
            f"{inp}: no image files to predict (supported: PNG, JPEG, TIFF, BMP, DICOM)."
        )
    out = Path(out)
    summary = PredictSummary(skipped=[*plan.skipped, *skipped])
    summary.csvs = _ResultCsvs(out, backend.class_names, columns, dicom is not None)
    items: Sequence = plan.items
    bar = None
    if progress and len(items) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc="predict", unit="img")
    reached = 0  # inputs handed to the model so far; the rest are listed if the run stops
    try:
        for src, why in plan.missing:
            summary.add_failed(src, why)
        for src, why in summary.skipped:
            summary.csvs.not_predicted(src, why)
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            reached = start
            loaded: list[tuple[LoadedImage, Path]] = []
            for src, target in chunk:
                try:
                    loaded.append((load_for_model(src, backend.settings, frame), target))
                except (DataError, OSError, ValueError, MemoryError, cv2.error) as exc:
                    summary.add_failed(src, _reason(src, exc))
            if loaded:
                _predict_loaded(backend, loaded, tta, explainer, threshold, out, summary, dicom)
            reached = start + len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    except BaseException as exc:
        listed = {str(p) for p, _ in summary.failed} | {r["file"] for r in summary.rows}
        why = f"not predicted: the run stopped ({type(exc).__name__}) before this image was done"
        with contextlib.suppress(WriteError):  # a full disk: the error raised says so already
            for src, _ in items[reached:]:
                if str(src) not in listed:
                    summary.add_failed(src, why)
        if isinstance(exc, WriteError):
            raise WriteError(
                f"{exc} {out / 'predictions.csv'} keeps the {len(summary.rows)} image(s) "
                "predicted before it."
            ) from exc
        if isinstance(exc, Stopped):
            raise exc.keeping(
                f"{out / 'predictions.csv'} keeps the {len(summary.rows)} image(s) predicted "
                f"before it; {out / 'not_predicted.csv'} lists the {len(summary.failed)} other(s)"
            ) from None
        raise
    finally:
        if bar is not None:
            bar.close()
        summary.csvs.close(quiet=sys.exc_info()[0] is not None)
    return summary


def _reason(src: Path, exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if str(src) in text else f"{src}: {type(exc).__name__}: {text}"


def _predict_loaded(
    backend,
    loaded: list,
    tta: bool,
    explainer,
    threshold: float,
    out: Path,
    summary,
    dicom: DicomOutput | None = None,
) -> None:
    """Predict one batch; if the batch fails, each image alone, so one bad image costs only itself."""
    try:
        batch = np.stack([li.model_input for li, _ in loaded])[:, None].astype(np.float32)
        pred = predict_batch(backend, batch, tta)
        cams = (
            explainer(batch, pred.cls.argmax(1))
            if (explainer is not None and pred.cls is not None)
            else None
        )
    except (RuntimeError, ValueError, MemoryError, cv2.error) as exc:
        if len(loaded) == 1:
            summary.add_failed(loaded[0][0].path, _reason(loaded[0][0].path, exc))
            return
        for one in loaded:
            _predict_loaded(backend, [one], tta, explainer, threshold, out, summary, dicom)
        return
    for k, (li, target) in enumerate(loaded):
        try:
            row = _write_outputs(backend, li, k, pred, cams, target, out, threshold, dicom)
            summary.add_row(row)
            if pred.features is not None:
                summary.features.append(pred.features[k])
                summary.thumbs.append(li.thumb)
        except BaseException as exc:
            # an image without a row in predictions.csv keeps none of its outputs
            stem = target.with_suffix("")
            for suffix in OUTPUT_SUFFIXES:
                with contextlib.suppress(OSError):
                    stem.with_name(stem.name + suffix).unlink(missing_ok=True)
            if not isinstance(exc, (OSError, ValueError, cv2.error, DataError)):
                raise
            summary.add_failed(li.path, _reason(li.path, exc))


def _write_outputs(
    backend,
    li: LoadedImage,
    k: int,
    pred: BatchPrediction,
    cams,
    target: Path,
    out: Path,
    threshold: float,
    dicom: DicomOutput | None = None,
) -> dict:
    seg_p, cls_p = pred.seg, pred.cls
    stem = target.with_suffix("")
    shape = li.image8.shape
    row: dict = {"file": str(li.path)}
    mask = None
    if seg_p is not None:
        mask = mask_at_original_size(seg_p[k, 0], shape, threshold)
        mask = getattr(backend, "postprocess", PostProcess())(mask)
        mask_path = stem.with_name(stem.name + "_mask.png")
        write_png(mask.astype(np.uint8) * 255, mask_path)
        row["mask_file"] = mask_path.relative_to(out).as_posix()
        row["lesion_area_px"] = int(mask.sum())
        mm2 = li.meta.area_mm2(row["lesion_area_px"])
        row["lesion_area_mm2"] = "" if mm2 is None else mm2
    text = "mask only"
    if cls_p is not None:
        c = int(cls_p[k].argmax())
        row["predicted_class"] = backend.class_names[c]
        for name, p in zip(backend.class_names, cls_p[k], strict=True):
            row[f"prob_{name}"] = round(float(p), 6)
        text = f"{backend.class_names[c]} {cls_p[k, c]:.2f}"
    row.update(uncertainty_row(backend, pred, k))
    if row.get("unlike_training"):
        text += " - unlike training data"
    heat = None
    if cams is not None:
        heat = cv2.resize(
            cams[k].astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR
        )
        write_png(
            (np.clip(heat, 0, 1) * 255).astype(np.uint8), stem.with_name(stem.name + "_gradcam.png")
        )
    overlay_path = stem.with_name(stem.name + "_overlay.png")
    write_png(overlay(li.image8, mask, text, heat), overlay_path)
    row["overlay_file"] = overlay_path.relative_to(out).as_posix()
    if dicom is not None and li.meta.format == "dicom":
        prob = None
        if seg_p is not None and dicom.seg_type == "fractional":
            prob = probability_at_size(seg_p[k, 0], shape)
        try:
            row.update(write_dicom_outputs(stem, out, li.path, mask, prob, li.meta, dicom, row))
        except DataError as exc:  # the prediction and its PNGs stand; the row says why no SEG
            row["seg_error"] = str(exc)
    return row


# what :func:`_write_outputs` may write for one image, after its output stem
OUTPUT_SUFFIXES = (
    "_mask.png",
    "_overlay.png",
    "_gradcam.png",
    SEG_SUFFIX,
    SR_SUFFIX,
    RESULT_SUFFIX,
)


# the uncertainty columns of predictions.csv (:func:`uncertainty_row`), in this order
UNCERTAINTY_FIELDS = (
    "entropy",
    "answer_set",
    "unlike_score",
    "unlike_training",
    "class_disagreement",
    "mask_agreement",
    "refer",
    "refer_reasons",
)


class _ResultCsvs:
    """``predictions.csv`` (one row per predicted input, ``file`` as the input path was given,
    then the columns the input list gave it: label, patient, device...) and
    ``not_predicted.csv`` (every input without a row there, with the reason), written row by
    row (:class:`medmtl.io.files.CsvRows`)."""

    def __init__(
        self,
        out: Path,
        class_names: Sequence[str],
        columns: dict[str, dict[str, str]] | None,
        dicom_seg: bool,
    ) -> None:
        fields = [
            "file",
            "predicted_class",
            *[f"prob_{c}" for c in class_names],
            *UNCERTAINTY_FIELDS,
            "lesion_area_px",
            "lesion_area_mm2",
            "mask_file",
            "overlay_file",
        ]
        if dicom_seg:
            fields += ["seg_file", "seg_sop_instance_uid", "sr_file", "result_file", "seg_error"]
        self.columns = columns or {}
        listed = list(dict.fromkeys(k for v in self.columns.values() for k in v))
        # a list's own column that has a result's name is kept as input_<name>
        self.named = {k: (f"input_{k}" if k in fields else k) for k in listed}
        self.predictions = CsvRows(out / "predictions.csv", fields + list(self.named.values()))
        # a stale list from an earlier run would mislead: none is left when all succeed
        self.failed = CsvRows(out / "not_predicted.csv", ["file", "reason"], False)

    def predicted(self, row: dict) -> None:
        given = self.columns.get(row.get("file", ""), {})
        self.predictions.add(row | {self.named[k]: v for k, v in given.items()})

    def not_predicted(self, src: Path, reason: str) -> None:
        self.failed.add({"file": str(src), "reason": reason})

    def close(self, quiet: bool = False) -> None:
        """Put both in place; ``quiet`` (another error is on its way) keeps a failure silent."""
        for csv_rows in (self.predictions, self.failed):
            try:
                csv_rows.close()
            except WriteError:
                if not quiet:
                    raise

"""Per-image predictions of an evaluation (``predictions_<split>.csv``) and the metrics from them.

Every number of ``metrics.json`` can be recomputed from this file: classification from the
class probabilities, segmentation from the per-image pixel counts (true positives, ground-truth
and predicted lesion pixels on the model's input grid). The metric functions take optional
**resampling weights** (how often each image is drawn, one row per resample), so that the
bootstrap in :mod:`medmtl.reporting.statistics` evaluates thousands of resamples at once with
exactly the definitions used here.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from medmtl.data.manifest import RESERVED, UNCERTAINTY_COLUMNS
from medmtl.errors import DataError
from medmtl.io.files import atomic_path, atomic_write_text
from medmtl.metrics import (
    ANSWER_SEP,
    FROC_FP_RATES,
    FROC_THRESHOLDS,
    LESION_COLUMNS,
    LESION_FOUND_IOU,
    SIZE_BINS,
    brier,
    calibration,
    dice_iou,
    entropy,
    match_lesions,
    nll,
    overall_score,
    refer,
    size_bin,
)


@dataclass
class PerImage:
    """One evaluation, one entry per image, in a fixed image order (``ids``)."""

    ids: list[str]
    classes: tuple[str, ...]
    label: np.ndarray  # (n,) true class index
    prob: np.ndarray | None = None  # (n, C) class probabilities (None: segmentation-only)
    tp: np.ndarray | None = None  # (n,) lesion pixels in both (None: classification-only)
    gt: np.ndarray | None = None  # (n,) ground-truth lesion pixels
    pred: np.ndarray | None = None  # (n,) predicted lesion pixels
    dataset: str | list[str] = ""  # one name, or one per image (data=multi)
    split: str = ""
    # per-image Dice/IoU and "any predicted pixel"; derived from the counts unless averaged
    dice: np.ndarray | None = field(default=None, repr=False)
    iou: np.ndarray | None = field(default=None, repr=False)
    has_pred: np.ndarray | None = field(default=None, repr=False)
    # evaluated on fewer classes than the model has (another data set): 1 where the model's
    # own arg-max is a class outside ``classes`` (named ``outside_name``, e.g. normal)
    outside: np.ndarray | None = None
    outside_name: str = ""
    # ... and then the model's own arg-max over all its classes (the confusion matrix's columns)
    model_classes: tuple[str, ...] = ()
    model_pred: np.ndarray | None = None
    meta: dict[str, list[str]] = field(default_factory=dict)  # metadata columns (device, ...)
    # (n, C) conformal answer sets over ``classes`` (True: the class is in the image's set)
    answer_set: np.ndarray | None = None
    # (n,) uncertainty (data.manifest.UNCERTAINTY_COLUMNS): the unlike-training score (> 1:
    # unlike the training data, NaN: the model has none), the class disagreement (mutual
    # information, 0..1) and the mask agreement (mean pairwise Dice) of an ensemble's members
    # or of an image and its mirror
    unlike_score: np.ndarray | None = None
    class_disagreement: np.ndarray | None = None
    mask_agreement: np.ndarray | None = None
    # (n, len(LESION_COLUMNS)) lesions found, missed and invented (medmtl.metrics.lesion_counts)
    lesion_counts: np.ndarray | None = None
    # an ensemble refers an image whose members' mask agreement is below this (set out of fold)
    min_mask_agreement: float | None = None

    def __post_init__(self) -> None:
        self.label = np.asarray(self.label, dtype=np.int64)
        if self.tp is not None:
            tp, gt, pred = (np.asarray(a, dtype=np.float64) for a in (self.tp, self.gt, self.pred))
            self.tp, self.gt, self.pred = tp, gt, pred
            fp, fn = pred - tp, gt - tp
            if self.dice is None:
                self.dice = dice_iou(tp, fp, fn)[0]
            if self.iou is None:
                self.iou = dice_iou(tp, fp, fn)[1]
            if self.has_pred is None:
                self.has_pred = (pred > 0).astype(np.float64)
        if self.prob is not None:
            self.prob = np.asarray(self.prob, dtype=np.float64)
        if self.outside is not None:
            self.outside = np.asarray(self.outside, dtype=np.float64)
        if self.model_pred is not None:
            self.model_pred = np.asarray(self.model_pred, dtype=np.int64)
        if self.answer_set is not None:
            self.answer_set = np.asarray(self.answer_set, dtype=np.float64)
        if self.lesion_counts is not None:
            self.lesion_counts = np.asarray(self.lesion_counts, dtype=np.float64)
        for name in UNCERTAINTY_COLUMNS:
            if getattr(self, name) is not None:
                setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))

    @property
    def refer(self) -> np.ndarray | None:
        """(n,) 1 where the image should go to a human: its answer set is not a single class,
        or it is unlike the training data; None when the model has neither."""
        return refer(
            self.answer_set, self.unlike_score, self.mask_agreement, self.min_mask_agreement
        )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def task(self) -> str:
        if self.prob is None:
            return "seg"
        return "cls" if self.tp is None else "multitask"

    @property
    def has_lesion(self) -> np.ndarray:
        return self.gt > 0

    def datasets(self) -> list[str]:
        """The data set of each image."""
        if isinstance(self.dataset, str):
            return [self.dataset] * len(self)
        return list(self.dataset)

    def column(self, name: str) -> list[str]:
        """A per-image column by name: ``dataset``, ``true_class`` or a metadata column."""
        if name == "dataset":
            return self.datasets()
        if name == "true_class":
            return [self.classes[i] for i in self.label]
        if name not in self.meta:
            known = ", ".join(["dataset", "true_class", *self.meta])
            raise DataError(f"by={name}: no such column in the predictions; choose from {known}.")
        return list(self.meta[name])


def subset(p: PerImage, keep: Sequence[bool]) -> PerImage:
    """The images where ``keep`` is true, every per-image field cut alike."""
    idx = np.flatnonzero(np.asarray(keep, dtype=bool))
    n = len(p)
    # every array field holds one row per image: cut them all, so that a field added later
    # cannot be left at full length
    cut = {
        f.name: np.asarray(v)[idx]
        for f in fields(p)
        if isinstance(v := getattr(p, f.name), np.ndarray) and len(v) == n
    }
    return replace(
        p,
        ids=[p.ids[i] for i in idx],
        dataset=p.dataset if isinstance(p.dataset, str) else [p.dataset[i] for i in idx],
        meta={k: [v[i] for i in idx] for k, v in p.meta.items()},
        **cut,
    )


def concat(parts: Sequence[PerImage]) -> PerImage:
    """One evaluation of the images of several (cross-validation folds' test sides, each image
    tested once): every per-image field joined in order. The parts must share their classes and
    columns and must not share an image."""
    first = parts[0]
    seen: set[str] = set()
    for part in parts:
        if part.classes != first.classes or set(part.meta) != set(first.meta):
            raise DataError(
                "evaluations to be pooled have different classes or columns "
                f"({part.classes} vs {first.classes}); pool the folds of one sweep row."
            )
        twice = seen.intersection(part.ids)
        if twice:
            raise DataError(
                f"evaluations to be pooled share {len(twice)} image(s) (e.g. {sorted(twice)[0]}); "
                "only folds whose test sides are disjoint pool into one out-of-fold evaluation."
            )
        seen.update(part.ids)
    joined = {}
    for f in fields(first):
        values = [getattr(part, f.name) for part in parts]
        arrays = [isinstance(v, np.ndarray) for v in values]  # every array is per image
        if all(arrays):
            joined[f.name] = np.concatenate(values)
        elif any(arrays):
            raise DataError(f"evaluations to be pooled: {f.name} is missing from some of them.")
    names = [d for part in parts for d in part.datasets()]
    return replace(
        first,
        ids=[i for part in parts for i in part.ids],
        dataset=names[0] if len(set(names)) == 1 else names,
        meta={k: [v for part in parts for v in part.meta[k]] for k in first.meta},
        **joined,
    )


def restrict(p: PerImage, model_classes: Sequence[str], classes: Sequence[str]) -> PerImage:
    """An evaluation on a data set whose ``classes`` are fewer than the model's.

    ``p`` holds the model's probabilities over ``model_classes`` and labels in that order. The
    result has the data's classes only: each image's probabilities are renormalised over them
    (for benign and malignant of a normal/benign/malignant model, P(malignant) / (P(benign) +
    P(malignant))), so its arg-max is the arg-max over the mapped classes; an image whose own
    arg-max is another class (normal) is flagged in ``outside`` (each one a miss).
    """
    model_classes, classes = list(model_classes), list(classes)
    keep = [model_classes.index(c) for c in classes]
    left = [c for c in model_classes if c not in classes]
    label_names = [model_classes[i] for i in p.label]
    strange = sorted(set(label_names) - set(classes))
    if strange:
        raise DataError(f"images labelled {', '.join(strange)} are outside {classes}.")
    prob = outside = model_pred = None
    if p.prob is not None:
        kept = p.prob[:, keep]
        prob = kept / np.maximum(kept.sum(1, keepdims=True), 1e-12)
        model_pred = p.prob.argmax(1)
        outside = (~np.isin(model_pred, keep)).astype(np.float64) if left else None
    # an answer set keeps the data's classes (a set of only "normal" is then empty: a miss)
    answer_set = p.answer_set[:, keep] if p.answer_set is not None else None
    return replace(
        p,
        classes=tuple(classes),
        label=np.array([classes.index(n) for n in label_names], dtype=np.int64),
        prob=prob,
        answer_set=answer_set,
        outside=outside,
        outside_name="_or_".join(left) if left else "",
        model_classes=tuple(model_classes),
        model_pred=model_pred,
    )


# -- the CSV file ------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return repr(float(v)) if math.isfinite(v) else ""


def _parse(text: str) -> float:
    """A number :func:`_fmt` wrote (an empty cell: NaN)."""
    return float(text) if text != "" else np.nan


def write_predictions(path: str | Path, p: PerImage) -> Path:
    """Write ``predictions_<split>.csv`` atomically: one row per image."""
    head = ["id", "dataset", "split", "true_class"]
    if p.prob is not None:
        head += ["pred_class", *[f"prob_{c}" for c in p.classes], "entropy"]
    if p.tp is not None:
        head += ["dice", "iou", "gt_pixels", "pred_pixels", "tp_pixels"]
    if p.lesion_counts is not None:
        head += list(LESION_COLUMNS)
    if p.outside is not None:
        head.append(f"called_{p.outside_name}")
    if p.answer_set is not None:
        head.append("answer_set")
    uncertain = [c for c in UNCERTAINTY_COLUMNS if getattr(p, c) is not None]
    head += uncertain
    referred = p.refer
    if referred is not None:
        head.append("refer")
    if p.min_mask_agreement is not None:
        head.append("refer_min_mask_agreement")
    head += list(p.meta)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    datasets = p.datasets()
    uncertainty = entropy(p.prob) if p.prob is not None else None
    for i, case_id in enumerate(p.ids):
        row = [case_id, datasets[i], p.split, p.classes[p.label[i]]]
        if p.prob is not None:
            row += [p.classes[int(p.prob[i].argmax())], *[_fmt(v) for v in p.prob[i]]]
            row.append(_fmt(uncertainty[i]))
        if p.tp is not None:
            row += [_fmt(p.dice[i]), _fmt(p.iou[i])]
            row += [str(int(round(v))) for v in (p.gt[i], p.pred[i], p.tp[i])]
        if p.lesion_counts is not None:
            row += [_fmt(v) for v in p.lesion_counts[i]]
        if p.outside is not None:
            row.append(str(int(p.outside[i])))
        if p.answer_set is not None:
            row.append(
                ANSWER_SEP.join(
                    c for c, on in zip(p.classes, p.answer_set[i], strict=True) if on >= 0.5
                )
            )
        row += [_fmt(getattr(p, c)[i]) for c in uncertain]
        if referred is not None:
            row.append(str(int(referred[i])))
        if p.min_mask_agreement is not None:
            row.append(_fmt(p.min_mask_agreement))
        row += [p.meta[k][i] for k in p.meta]
        w.writerow(row)
    return atomic_write_text(path, buf.getvalue())


def masks_in_order(ids: Sequence[str], samples: dict, what: str) -> dict[str, np.ndarray]:
    """The test run's images (8-bit), ground truths and scored masks, one per image in ``ids``
    order (``samples`` as :meth:`MultiTaskModule.test_samples` returns them; DDP padding and
    repeated images dropped); ``what`` names the output in the error of a count mismatch."""
    index = np.asarray(samples["index"])
    order = np.argsort(index, kind="stable")
    keep = order[np.r_[True, index[order][1:] != index[order][:-1]]]  # one entry per image
    if len(keep) != len(ids):
        raise DataError(f"{what}: {len(keep)} evaluated images for {len(ids)} predictions.")
    keys = [k for k in ("image", "mask", "pred_mask", "lesions") if k in samples]
    return {k: np.asarray(samples[k])[keep][:, 0] for k in keys}


# lesions_<split>.csv: one row per lesion
LESION_TABLE = (
    "id", "lesion", "size", "grid_area_px", "grid_share", "area_px", "area_mm2", "iou", "dice",
    "found",
)  # fmt: skip


def write_lesions(
    path: str | Path, ids: Sequence[str], samples: dict, cases: Sequence | None = None
) -> Path:
    """``lesions_<split>.csv``: each lesion of the evaluated images (``ids`` order, that of
    ``predictions_<split>.csv``), matched against the mask that was scored as
    :func:`medmtl.metrics.match_lesions` does: its label in the image, size bin and area on
    the model's input grid, its area in pixels and mm² on the original image (``cases``: the
    cached cases in ``ids`` order, :class:`medmtl.data.cache.CachedCase`; empty where
    unknown), its IoU and Dice with the predicted components touching it, and whether it was
    found. Written atomically; an image without lesions has no row."""
    arrays = masks_in_order(ids, samples, str(path))
    if cases is not None and len(cases) != len(ids):
        raise DataError(f"{path}: {len(cases)} cached cases for {len(ids)} images.")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LESION_TABLE)
    for i, case_id in enumerate(ids):
        labels, pred = arrays["lesions"][i], arrays["pred_mask"][i]
        ious, areas, _ = match_lesions(labels, pred)
        ids_here = [int(v) for v in np.unique(labels) if v != 0]  # match_lesions' order
        for label, iou, area in zip(ids_here, ious, areas, strict=True):
            share = area / labels.size
            case = cases[i] if cases is not None else None
            original = (
                case.lesion_area_px[label - 1]
                if case is not None and label <= len(case.lesion_area_px)
                else np.nan
            )
            mm2 = case.lesion_area_mm2(label) if case is not None else np.nan
            w.writerow([
                case_id, label, size_bin(share), int(area), _fmt(share), _fmt(original),
                _fmt(mm2), _fmt(iou), _fmt(2 * iou / (1 + iou)), int(iou >= LESION_FOUND_IOU),
            ])  # fmt: skip
    return atomic_write_text(path, buf.getvalue())


def write_masks(path: str | Path, ids: Sequence[str], samples: dict) -> Path:
    """``masks_<split>.npz``: each evaluated image (8-bit), its ground truth and the mask that
    was scored (gate, flip and post-processing applied), on the model's input grid, in ``ids``
    order (that of ``predictions_<split>.csv``), written atomically.

    ``samples``: the test run's per-image outputs (``index``, ``image``, ``mask``,
    ``pred_mask``, as :meth:`MultiTaskModule.test_samples` returns them)."""
    arrays = masks_in_order(ids, samples, str(path))
    with atomic_path(path) as tmp:
        np.savez_compressed(
            tmp,
            ids=np.array(list(ids)),
            image=arrays["image"].astype(np.uint8),
            truth=arrays["mask"].astype(bool),
            pred=arrays["pred_mask"].astype(bool),
        )
    return Path(path)


def read_masks(path: str | Path) -> dict[str, np.ndarray]:
    """What :func:`write_masks` wrote: ``ids``, ``image``, ``truth``, ``pred``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in ("ids", "image", "truth", "pred")}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a readable masks file of medmtl-eval ({exc}).") from exc
    out["ids"] = out["ids"].astype(str)
    return out


def read_predictions(path: str | Path, classes: Sequence[str] | None = None) -> PerImage:
    """Read a predictions CSV; the class order is taken from its ``prob_<class>`` columns."""
    path = Path(path)
    try:
        rows = list(csv.DictReader(path.open(newline="", encoding="utf-8")))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the predictions file ({exc}).") from exc
    if not rows:
        raise DataError(f"{path}: no images in the predictions file; re-run the evaluation.")
    head = list(rows[0])
    missing = [c for c in ("id", "true_class") if c not in head]
    if missing:
        raise DataError(f"{path}: not a medmtl predictions file (no {', '.join(missing)} column).")
    prob_cols = [c for c in head if c.startswith("prob_")]
    names = tuple(classes) if classes else tuple(c.removeprefix("prob_") for c in prob_cols)
    if not names:
        seen = sorted({r["true_class"] for r in rows})
        names = tuple(seen)
    try:
        label = [names.index(r["true_class"]) for r in rows]
        prob = (
            np.array([[float(r[f"prob_{c}"]) for c in names] for r in rows]) if prob_cols else None
        )
        seg = "tp_pixels" in head
        counts = (
            {k: np.array([float(r[f"{k}_pixels"]) for r in rows]) for k in ("tp", "gt", "pred")}
            if seg
            else {}
        )
        called = next((c for c in head if c.startswith("called_")), None)
        outside = np.array([float(r[called]) for r in rows]) if called else None
        answer_set = None
        if "answer_set" in head:
            sets = [set(filter(None, r["answer_set"].split(ANSWER_SEP))) for r in rows]
            strange = sorted(set().union(*sets) - set(names))
            if strange:
                raise ValueError(f"answer_set names unknown classes {strange}")
            answer_set = np.array([[c in s for c in names] for s in sets], dtype=np.float64)
        uncertainty = {
            c: np.array([_parse(r[c]) for r in rows]) for c in UNCERTAINTY_COLUMNS if c in head
        }
        lesions = (
            np.array([[_parse(r[c]) for c in LESION_COLUMNS] for r in rows])
            if "lesions" in head
            else None
        )
    except (ValueError, KeyError) as exc:
        raise DataError(
            f"{path}: malformed value or column ({exc}); re-run the evaluation."
        ) from exc
    own = RESERVED | {called} | set(prob_cols)  # the columns medmtl writes itself
    datasets = [r.get("dataset", "") for r in rows]
    return PerImage(
        ids=[r["id"] for r in rows],
        classes=names,
        label=np.array(label),
        prob=prob,
        dataset=datasets[0] if len(set(datasets)) == 1 else datasets,
        split=rows[0].get("split", ""),
        outside=outside,
        outside_name=called.removeprefix("called_") if called else "",
        meta={c: [r[c] for r in rows] for c in head if c not in own},
        answer_set=answer_set,
        lesion_counts=lesions,
        min_mask_agreement=(
            float(rows[0]["refer_min_mask_agreement"])
            if "refer_min_mask_agreement" in head and rows
            else None
        ),
        **uncertainty,
        **counts,
    )


# -- metrics, optionally over many resamples at once ---------------------------------------------
def _weights(n: int, weights: np.ndarray | None) -> np.ndarray:
    return np.ones((1, n)) if weights is None else np.atleast_2d(np.asarray(weights, float))


def _safe(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _macro(score: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Macro average over classes that occur (torchmetrics ignores classes with tp+fp+fn = 0)."""
    w = present.astype(float)
    return np.where(w.sum(1) > 0, (np.nan_to_num(score) * w).sum(1) / np.maximum(w.sum(1), 1), 0)


def _auc(prob: np.ndarray, label: np.ndarray, W: np.ndarray, C: int) -> np.ndarray:
    """Macro one-vs-rest ROC AUC (weighted Mann-Whitney; ties count one half)."""
    out = []
    for c in range(C):
        pos = label == c
        if pos.all() or not pos.any():
            out.append(np.full(W.shape[0], np.nan))
            continue
        s = prob[:, c]
        g = (s[pos][:, None] > s[~pos][None, :]) + 0.5 * (s[pos][:, None] == s[~pos][None, :])
        wp, wn = W[:, pos], W[:, ~pos]
        num = np.einsum("bi,ij,bj->b", wp, g, wn)
        out.append(_safe(num, wp.sum(1) * wn.sum(1)))
    auc = np.stack(out, 1)
    valid = ~np.isnan(auc)
    return np.where(
        valid.any(1), np.nansum(auc, 1) / np.maximum(valid.sum(1), 1), np.nan
    )  # classes without positives or negatives are left out, as torchmetrics does


def classification(p: PerImage, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Accuracy, macro F1/precision/recall, per-class scores, AUC, ECE, NLL, Brier score and
    the confusion matrix."""
    C, n = len(p.classes), len(p)
    W = _weights(n, weights)
    pred = p.prob.argmax(1)
    pair = np.zeros((n, C * C))
    pair[np.arange(n), p.label * C + pred] = 1
    cm = (W @ pair).reshape(-1, C, C)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    fp, fn = cm.sum(1) - tp, cm.sum(2) - tp
    prec, rec = _safe(tp, tp + fp), _safe(tp, tp + fn)
    f1 = _safe(2 * tp, 2 * tp + fp + fn)
    present = (tp + fp + fn) > 0
    total = W.sum(1)
    support = cm.sum(2)  # images of each true class
    out = {
        "cls_acc": tp.sum(1) / total,
        "cls_f1": _macro(f1, present),
        # weighted by each class's share of the images (scikit-learn's average="weighted")
        "cls_f1_weighted": (np.nan_to_num(f1) * support).sum(1) / total,
        "cls_precision": _macro(prec, present),
        "cls_recall": _macro(rec, present),
        "cls_auc": _auc(p.prob, p.label, W, C),
        "cls_ece": calibration(p.prob, p.label, W)["ece"],
        "cls_nll": nll(p.prob, p.label, W),
        "cls_brier": brier(p.prob, p.label, W),
        "confusion_matrix": cm,
    }
    for c, name in enumerate(p.classes):
        out[f"cls_f1_{name}"] = np.nan_to_num(f1[:, c])
        out[f"cls_precision_{name}"] = np.nan_to_num(prec[:, c])
        out[f"cls_recall_{name}"] = np.nan_to_num(rec[:, c])
    return out


def segmentation(p: PerImage, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """All-image and lesion-only Dice/IoU, the all-image Dice of each true class, pixel-level
    F1 and the normal false-positive rate."""
    W = _weights(len(p), weights)
    lesion = p.has_lesion.astype(float)
    fp, fn = p.pred - p.tp, p.gt - p.tp
    stp, sfp, sfn = W @ p.tp, W @ fp, W @ fn
    # per true class, with seg_dice's convention (an empty truth scores 1 if the prediction is
    # empty, else 0): the curated-BUSI study's "DSC benign / malignant / normal"
    by_class = {
        f"seg_dice_{name}": _safe(W @ (p.dice * (p.label == c)), W @ (p.label == c).astype(float))
        for c, name in enumerate(p.classes)
        if (p.label == c).any()
    }
    return {
        **by_class,
        "seg_dice": W @ p.dice / W.sum(1),
        "seg_iou": W @ p.iou / W.sum(1),
        "seg_dice_lesion": _safe(W @ (p.dice * lesion), W @ lesion),
        "seg_iou_lesion": _safe(W @ (p.iou * lesion), W @ lesion),
        "seg_f1": _safe(2 * stp, 2 * stp + sfp + sfn),
        "normal_fp_rate": _safe(W @ (p.has_pred * (1 - lesion)), W @ (1 - lesion)),
        # lesion images left with an empty mask (missed lesions, whatever the class says)
        "empty_lesion_rate": _safe(W @ ((1 - p.has_pred) * lesion), W @ lesion),
    }


def lesions(p: PerImage, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Lesion-level detection from the per-image lesion counts: the share of lesions found
    (over all lesions of the split, not per image), false-positive components per image, and
    per size bin the share found and the mean Dice of its lesions, the FROC curve's CPM, and
    the mean HD95 and normalised surface Dice of the lesion images' masks."""
    W = _weights(len(p), weights)
    col = {name: p.lesion_counts[:, j] for j, name in enumerate(LESION_COLUMNS)}
    out = {
        "lesion_sensitivity": _safe(W @ col["lesions_found"], W @ col["lesions"]),
        "fp_per_image": W @ col["fp_components"] / W.sum(1),
    }
    for name, _, _ in SIZE_BINS:
        n = W @ col[f"lesions_{name}"]
        out[f"lesion_sensitivity_{name}"] = _safe(W @ col[f"lesions_found_{name}"], n)
        out[f"lesion_dice_{name}"] = _safe(W @ col[f"lesion_dice_sum_{name}"], n)
    fp, sens = froc_curve(p.lesion_counts, weights)
    out["lesion_froc_cpm"] = froc_cpm(fp, sens)
    for key, name in (("seg_hd95_lesion", "hd95"), ("seg_nsd_lesion", "nsd")):
        v = col[name]  # NaN where undefined: a normal image; HD95 of an empty prediction
        out[key] = _safe(W @ np.nan_to_num(v), W @ np.isfinite(v))
    return out


def froc_curve(
    counts: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The FROC curve of per-image lesion counts (``(n, len(LESION_COLUMNS))``): false-positive
    components per image and lesion sensitivity at each of :data:`FROC_THRESHOLDS`, each
    ``(rows of weights, thresholds)``."""
    counts = np.asarray(counts, dtype=np.float64)
    W = _weights(len(counts), weights)
    col = {name: counts[:, j] for j, name in enumerate(LESION_COLUMNS)}
    n_lesions = W @ col["lesions"]
    fp = np.stack([W @ col[f"fp_components_t{t:g}"] / W.sum(1) for t in FROC_THRESHOLDS], 1)
    sens = np.stack(
        [_safe(W @ col[f"lesions_found_t{t:g}"], n_lesions) for t in FROC_THRESHOLDS], 1
    )
    return fp, sens


def froc_cpm(fp: np.ndarray, sens: np.ndarray) -> np.ndarray:
    """The mean, over :data:`FROC_FP_RATES`, of the highest sensitivity reached with at most
    that many false positives per image (0 where no threshold is that clean); NaN without
    lesions."""
    at = [np.where(fp <= rate, sens, -np.inf).max(1) for rate in FROC_FP_RATES]
    cpm = np.mean([np.where(np.isfinite(a), a, 0.0) for a in at], axis=0)
    return np.where(np.isnan(sens).all(1), np.nan, cpm)


SELECTIVE_COVERAGES = (0.9, 0.8)  # the shares kept for the "error at x % coverage" metrics


def risk_coverage(
    prob: np.ndarray, label: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Selective prediction: the images ordered from most to least certain (lowest
    :func:`medmtl.metrics.entropy` first) and, after each, the share kept (coverage) and the
    error rate of the answers kept (risk), one row per row of ``weights``. Also returns each
    image's weight and whether its answer is wrong, in that order."""
    n = len(label)
    W = _weights(n, weights)
    order = np.argsort(entropy(prob), kind="stable")
    err = (np.asarray(prob).argmax(1) != np.asarray(label))[order].astype(np.float64)
    Ws = W[:, order]
    kept = np.cumsum(Ws, 1)
    risk = np.cumsum(Ws * err, 1) / np.where(kept > 0, kept, 1)
    return kept / np.maximum(kept[:, -1:], 1e-12), risk, Ws, err


def selective(p: PerImage, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The area under the risk-coverage curve (AURC: the mean error of the answers kept, over
    every share kept; lower is better) and the error when only the 90 % / 80 % most certain
    images are answered."""
    from scipy.special import digamma

    coverage, risk, Ws, err = risk_coverage(p.prob, p.label, weights)
    # an image of weight w stands for w copies in a row, each with its own point of the curve:
    # after K kept with E errors, copy j adds (E + j e) / (K + j); summed over j = 1..w that is
    # (E − K e) (ψ(K + w + 1) − ψ(K + 1)) + e w, so a weight of 2 is the image drawn twice
    kept = np.cumsum(Ws, 1)
    before, errors = kept - Ws, np.cumsum(Ws * err, 1) - Ws * err
    area = (errors - before * err) * (digamma(kept + 1) - digamma(before + 1)) + err * Ws
    out = {"cls_aurc": _safe(area.sum(1), Ws.sum(1))}
    rows = np.arange(len(risk))
    for share in SELECTIVE_COVERAGES:
        first = np.minimum((coverage < share - 1e-9).sum(1), coverage.shape[1] - 1)
        out[f"cls_error_at_{round(share * 100)}"] = risk[rows, first]
    return out


def answer_sets(p: PerImage, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Conformal answer sets: coverage (the true class is in the set), mean set size, the share
    of single-class sets and of empty ones, and the coverage of each class."""
    W = _weights(len(p), weights)
    covered = p.answer_set[np.arange(len(p)), p.label]
    size = p.answer_set.sum(1)
    total = W.sum(1)
    out = {
        "conformal_coverage": W @ covered / total,
        "conformal_set_size": W @ size / total,
        "conformal_singleton_rate": W @ (size == 1).astype(float) / total,
        "conformal_empty_rate": W @ (size == 0).astype(float) / total,
    }
    for c, name in enumerate(p.classes):
        is_c = (p.label == c).astype(float)
        out[f"conformal_coverage_{name}"] = _safe(W @ (covered * is_c), W @ is_c)
    return out


def uncertainty_rates(p: PerImage, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The share of images unlike the training data and of images referred, the mean class
    disagreement and mask agreement, and the classification error of the images not referred."""
    W = _weights(len(p), weights)
    total = W.sum(1)
    out: dict[str, np.ndarray] = {}
    if p.unlike_score is not None and np.isfinite(p.unlike_score).all():
        out["unlike_rate"] = W @ (p.unlike_score > 1).astype(float) / total
    for name in ("class_disagreement", "mask_agreement"):
        values = getattr(p, name)
        if values is not None:
            out[name] = W @ values / total
    flags = p.refer
    if flags is not None:
        out["refer_rate"] = W @ flags / total
        if p.prob is not None:
            wrong = (p.prob.argmax(1) != p.label).astype(float)
            if p.outside is not None:  # called a class the data lacks: a miss
                wrong = np.maximum(wrong, p.outside)
            kept = 1 - flags
            out["cls_error_not_referred"] = _safe(W @ (wrong * kept), W @ kept)
    return out


def compute_metrics(p: PerImage, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every metric of ``metrics.json``, one value per row of ``weights`` (one row if None)."""
    out: dict[str, np.ndarray] = {}
    if p.prob is not None:
        out.update(classification(p, weights))
        out.update(selective(p, weights))
    if p.tp is not None:
        out.update(segmentation(p, weights))
    if p.lesion_counts is not None:
        out.update(lesions(p, weights))
    if p.answer_set is not None:
        out.update(answer_sets(p, weights))
    out.update(uncertainty_rates(p, weights))
    if p.outside is not None:  # another data set: images the model called a class it lacks
        W = _weights(len(p), weights)
        out[f"called_{p.outside_name}_rate"] = W @ p.outside / W.sum(1)
    if p.model_pred is not None:  # true (data classes) x predicted (all the model's classes)
        W = _weights(len(p), weights)
        M = len(p.model_classes)
        pair = np.zeros((len(p), len(p.classes) * M))
        pair[np.arange(len(p)), p.label * M + p.model_pred] = 1
        out["confusion_matrix"] = (W @ pair).reshape(-1, len(p.classes), M)
    out["overall"] = overall_score(out.get("cls_f1"), out.get("seg_dice"), p.task)
    return out


def metrics_dict(p: PerImage, prefix: str | None = None) -> dict[str, float | list]:
    """The metrics of one evaluation with ``metrics.json``'s keys (``<split>/<metric>``)."""
    prefix = prefix or p.split
    out: dict[str, float | list] = {}
    for key, value in compute_metrics(p).items():
        if key == "confusion_matrix":
            out[f"{prefix}/{key}"] = value[0].round().astype(int).tolist()
        else:
            out[f"{prefix}/{key}"] = float(value[0])
    return out


def average_runs(runs: Sequence[PerImage]) -> PerImage:
    """One evaluation standing for several runs on the same images.

    Class probabilities are averaged (an ensemble of the runs' outputs); per-image Dice, IoU,
    "any lesion predicted" and pixel counts are averaged, so all-image and lesion Dice/IoU and
    the normal false-positive rate equal the mean over the runs.
    """
    first = runs[0]
    for r in runs[1:]:
        if r.ids != first.ids or r.classes != first.classes:
            raise DataError(
                "runs to be averaged were evaluated on different images or classes; "
                "compare runs of the same split."
            )
    if len(runs) == 1:
        return first

    def mean(attr: str) -> np.ndarray | None:
        values = [getattr(r, attr) for r in runs]
        return None if values[0] is None else np.mean(values, axis=0)

    return replace(
        first,
        prob=mean("prob"),
        tp=mean("tp"),
        gt=first.gt,
        pred=mean("pred"),
        dice=mean("dice"),
        iou=mean("iou"),
        has_pred=mean("has_pred"),
        outside=mean("outside"),
        answer_set=mean("answer_set"),  # how often each class was in the runs' sets
        lesion_counts=mean("lesion_counts"),
        **{c: mean(c) for c in UNCERTAINTY_COLUMNS},
    )

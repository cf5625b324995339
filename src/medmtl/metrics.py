"""The metric definitions, written once (docs/metrics.md describes each metric).

Training (torch tensors, per batch), the per-image predictions file and its bootstrap (numpy,
thousands of resamples at once), the evaluation figures and the qualitative comparison all
compute Dice, IoU, the calibration error, NLL, Brier score and the overall score with these functions.
:func:`dice_iou` uses arithmetic only, so numpy arrays and torch tensors give the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

ECE_BINS = 10  # equal-width confidence bins of the expected calibration error


def dice_iou(tp: Any, fp: Any, fn: Any) -> tuple[Any, Any]:
    """Per-image Dice ``2TP / (2TP + FP + FN)`` and IoU ``TP / (TP + FP + FN)`` from pixel
    counts; both are 1 where the ground truth and the prediction are empty (a correct
    "no lesion"). Works on numpy arrays, torch tensors and numbers alike."""
    empty = (tp + fp + fn) == 0  # then the added 1 makes 1 / 1
    return (2 * tp + empty) / (2 * tp + fp + fn + empty), (tp + empty) / (tp + fp + fn + empty)


def mask_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks of the same shape (1 if both are empty)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    tp = int((pred & truth).sum())
    return float(dice_iou(tp, int((pred & ~truth).sum()), int((~pred & truth).sum()))[0])


def _rows(n: int, weights: np.ndarray | None) -> np.ndarray:
    return np.ones((1, n)) if weights is None else np.atleast_2d(np.asarray(weights, float))


def calibration(
    prob: np.ndarray, label: np.ndarray, weights: np.ndarray | None = None, n_bins: int = ECE_BINS
) -> dict[str, np.ndarray]:
    """Expected calibration error of the top-class probability, binned as torchmetrics bins
    (``[k/n, (k+1)/n)``, float32 confidences; a confidence of exactly 1 gets a bin of its own).

    ``weights`` (resamples × images, how often each image is drawn; None: each once) gives one
    result per row. Returns per-bin ``count``, ``confidence`` and ``correct`` sums (rows ×
    n_bins + 1) and ``ece`` (rows): Σ_bins |correct − confidence| / images.
    """
    prob = np.asarray(prob, dtype=np.float64)
    label = np.asarray(label)
    n = len(label)
    W = _rows(n, weights)
    conf = prob.max(1).astype(np.float32).astype(np.float64)
    correct = (prob.argmax(1) == label).astype(np.float64)
    edges = np.linspace(0, 1, n_bins + 1, dtype=np.float32).astype(np.float64)
    idx = np.searchsorted(edges, conf, side="right") - 1
    onehot = np.zeros((n, n_bins + 1))
    onehot[np.arange(n), idx] = 1
    out = {
        "count": W @ onehot,
        "confidence": W @ (onehot * conf[:, None]),
        "correct": W @ (onehot * correct[:, None]),
    }
    total = W.sum(1)
    out["ece"] = np.abs(out["correct"] - out["confidence"]).sum(1) / np.where(total > 0, total, 1)
    return out


def nll(prob: np.ndarray, label: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Negative log-likelihood of the true class, ``mean(−log p_true)`` (natural log; a
    probability below 1e-12 counts as 1e-12), one value per row of ``weights``."""
    prob, label = np.asarray(prob, dtype=np.float64), np.asarray(label)
    W = _rows(len(label), weights)
    loss = -np.log(np.clip(prob[np.arange(len(label)), label], 1e-12, None))
    return W @ loss / np.where(W.sum(1) > 0, W.sum(1), 1)


def brier(prob: np.ndarray, label: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Multi-class Brier score, ``mean(Σ_c (p_c − [c = true])²)`` (0 perfect, 2 worst), one
    value per row of ``weights``."""
    prob, label = np.asarray(prob, dtype=np.float64), np.asarray(label)
    W = _rows(len(label), weights)
    onehot = np.zeros_like(prob)
    onehot[np.arange(len(label)), label] = 1
    return W @ ((prob - onehot) ** 2).sum(1) / np.where(W.sum(1) > 0, W.sum(1), 1)


ANSWER_SEP = "|"  # between the class names of an answer set ("benign|malignant")
REASON_SEP = "; "  # between the reasons to refer an image, in a CSV cell


def entropy(prob: np.ndarray) -> np.ndarray:
    """Per-image predictive entropy of the class probabilities, normalised by ``log C``: 0 for
    a certain answer, 1 when every class is equally likely (a coin toss)."""
    prob = np.atleast_2d(np.asarray(prob, dtype=np.float64))
    if prob.shape[1] < 2:
        return np.zeros(len(prob))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(prob > 0, prob * np.log(prob), 0.0).sum(1)
    return np.clip(h / np.log(prob.shape[1]), 0.0, 1.0)


def class_disagreement(views: np.ndarray) -> np.ndarray:
    """(V, n, C) class probabilities of V predictions of the same images (ensemble members, or
    an image and its mirror) -> (n,) their mutual information with the class, the entropy of
    the mean minus the mean entropy, normalised like :func:`entropy` (0: they agree)."""
    views = np.asarray(views, dtype=np.float64)
    mean_h = np.mean([entropy(v) for v in views], axis=0)
    return np.clip(entropy(views.mean(0)) - mean_h, 0.0, 1.0)


def mask_agreement(views: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(V, n, ...) lesion probability maps of V predictions of the same images -> (n,) the mean
    Dice over all pairs of their masks at ``threshold`` (1: identical; two empty masks agree)."""
    masks = np.asarray(views) >= threshold
    masks = masks.reshape(masks.shape[0], masks.shape[1], -1)
    pairs = []
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            tp = (masks[i] & masks[j]).sum(1)
            pairs.append(
                dice_iou(tp, (masks[i] & ~masks[j]).sum(1), (~masks[i] & masks[j]).sum(1))[0]
            )
    return np.mean(pairs, axis=0) if pairs else np.ones(masks.shape[1])


def disagreement(outputs: Mapping[str, Any], threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Per-image ``class_disagreement`` and ``mask_agreement`` of a network's outputs: between
    an ensemble's members (``member_cls`` (M, n, C), ``member_seg`` (M, n, 1, H, W)) or, for
    one network, between an image and its mirror (``view_cls``, ``view_seg``); empty when there
    is only one prediction of each image."""

    def several(members: str, views: str) -> np.ndarray | None:
        value = outputs.get(members)
        return outputs.get(views) if value is None else value

    out: dict[str, np.ndarray] = {}
    if (cls := several("member_cls", "view_cls")) is not None:
        out["class_disagreement"] = class_disagreement(cls)
    if (seg := several("member_seg", "view_seg")) is not None:
        out["mask_agreement"] = mask_agreement(seg, threshold)
    return out


def refer_reasons(
    answer_set: np.ndarray | None,
    unlike_score: np.ndarray | None,
    mask_agreement: np.ndarray | None = None,
    min_mask_agreement: float | None = None,
    class_names: Sequence[str] = (),
) -> list[list[str]] | None:
    """Per image, why it should go to a human, in words the page shows: its answer set is not
    a single class, it is unlike the training data (unlike score above 1; NaN flags nothing),
    or an ensemble's members disagree about the mask (their mask agreement below
    ``min_mask_agreement``, set on out-of-fold data). None when the model has none of these."""
    checks = min_mask_agreement is not None and mask_agreement is not None
    if answer_set is None and unlike_score is None and not checks:
        return None
    n = len(next(a for a in (answer_set, unlike_score, mask_agreement) if a is not None))
    out: list[list[str]] = [[] for _ in range(n)]
    if answer_set is not None:
        sets = np.asarray(answer_set) >= 0.5
        for i, row in enumerate(sets):
            if row.sum() == 0:
                out[i].append("no class fits")
            elif row.sum() > 1:
                names = [class_names[j] for j in np.flatnonzero(row)] if class_names else []
                out[i].append(
                    f"it could be {' or '.join(names)}" if names else "several classes fit"
                )
    if unlike_score is not None:
        score = np.nan_to_num(np.asarray(unlike_score, dtype=np.float64), nan=0.0)
        for i in np.flatnonzero(score > 1):
            out[i].append("the scan is unlike the training data")
    if checks:
        agree = np.nan_to_num(np.asarray(mask_agreement, dtype=np.float64), nan=1.0)
        for i in np.flatnonzero(agree < min_mask_agreement):
            out[i].append(f"the models' outlines agree only {100 * agree[i]:.0f} %")
    return out


def refer(
    answer_set: np.ndarray | None,
    unlike_score: np.ndarray | None,
    mask_agreement: np.ndarray | None = None,
    min_mask_agreement: float | None = None,
) -> np.ndarray | None:
    """(n,) 1 where an image should go to a human (:func:`refer_reasons` gives why); None when
    the model has none of the signals."""
    reasons = refer_reasons(answer_set, unlike_score, mask_agreement, min_mask_agreement)
    if reasons is None:
        return None
    return np.array([1.0 if r else 0.0 for r in reasons])


def overall_score(cls_f1: Any, seg_dice: Any, task: str) -> Any:
    """``overall``: the mean of macro F1 and all-image Dice; for a single-task run, its one score."""
    if task == "seg":
        return seg_dice
    if task == "cls":
        return cls_f1
    return 0.5 * (cls_f1 + seg_dice)


# -- lesions (instances): found, missed, invented --------------------------------------------
LESION_FOUND_IOU = 0.1  # a lesion is found at this IoU with the predicted components touching it
# lesion size bins by area on the model's input grid, as a share of the image (small < 1 %,
# medium 1-5 %, large >= 5 %): the grid's side changes with data.image_size, the share does not
SIZE_BINS = (("small", 0.0, 0.01), ("medium", 0.01, 0.05), ("large", 0.05, 1.01))


def size_bin(share: float) -> str:
    """The :data:`SIZE_BINS` name of a lesion covering ``share`` of the image."""
    return next(name for name, low, high in SIZE_BINS if low <= share < high)


def components(mask: np.ndarray) -> np.ndarray:
    """Connected components (8-connected) of a boolean mask: 0 background, 1..K."""
    import cv2

    _, labels = cv2.connectedComponents(np.asarray(mask, dtype=np.uint8), connectivity=8)
    return labels


def instances(lesions: np.ndarray) -> np.ndarray:
    """Lesion instance labels (0 background, 1..L): as given, or for a boolean mask its
    connected parts, each a lesion."""
    lesions = np.asarray(lesions)
    return components(lesions) if lesions.dtype == bool else lesions


def match_lesions(lesions: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Which lesions a predicted mask finds, and what it invents.

    ``lesions``: (H, W) instance labels of the ground truth (0 background, 1..L one lesion
    each; a boolean mask: each of its connected parts is a lesion); ``pred``: (H, W) boolean
    predicted mask. Lesion ``l`` is **found** when the predicted
    components that touch it, together, overlap it with IoU ≥ :data:`LESION_FOUND_IOU` (a lesion predicted
    in two pieces is found once); a predicted component that touches no lesion is a **false
    positive**. Returns each lesion's IoU (L,), its area in pixels (L,), and the number of
    false-positive components.
    """
    lesions = instances(lesions)
    comp = components(pred)
    ids = [int(v) for v in np.unique(lesions) if v != 0]
    ious, areas = np.zeros(len(ids)), np.zeros(len(ids))
    for k, lesion_id in enumerate(ids):
        inside = lesions == lesion_id
        touching = np.unique(comp[inside])
        hit = np.isin(comp, touching[touching != 0])
        union = (inside | hit).sum()
        ious[k] = (inside & hit).sum() / union if union else 0.0
        areas[k] = inside.sum()
    on_lesion = np.unique(comp[lesions != 0])
    fp = int(len(set(np.unique(comp).tolist()) - set(on_lesion.tolist()) - {0}))
    return ious, areas, fp


# normalised surface Dice: a boundary pixel counts within this share of the image's side
NSD_TOLERANCE = 0.01
# FROC: lesions found and false-positive components at each of these mask thresholds (on the
# mask probability the model outputs; its mask_threshold is recentred to 0.5), summarised as
# the mean sensitivity at these false positives per image (the CPM of the LUNA16 challenge)
FROC_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
FROC_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _lesion_columns() -> tuple[str, ...]:
    cols = ["lesions", "lesions_found", "fp_components"]
    for name, _, _ in SIZE_BINS:
        cols += [f"lesions_{name}", f"lesions_found_{name}", f"lesion_dice_sum_{name}"]
    for t in FROC_THRESHOLDS:
        cols += [f"lesions_found_t{t:g}", f"fp_components_t{t:g}"]
    return (*cols, "hd95", "nsd")


# the per-image lesion counts (predictions CSV columns, in this order)
LESION_COLUMNS = _lesion_columns()


def lesion_counts(lesions: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """One image's lesion counts, in :data:`LESION_COLUMNS` order, for its predicted mask
    probability map ``prob`` (lesion where ``prob >= 0.5``; a boolean mask is a map of 0 and
    1): its lesions (``lesions``: instance labels, 0 background, or a boolean mask whose
    connected parts are its lesions), those found (:func:`match_lesions`), the false-positive
    components, per size bin (:data:`SIZE_BINS`, by the lesion's share of the image) its
    lesions, those found and the sum of their Dice (2 IoU / (1 + IoU)), at each of
    :data:`FROC_THRESHOLDS` the lesions found and the false-positive components, and the
    mask's :func:`boundary_metrics` (NaN where undefined)."""
    lesions = instances(lesions)
    prob = np.asarray(prob, dtype=np.float64)
    # the mask at 0.5, and at each FROC threshold (0.5 among them: matched once)
    matched = {t: match_lesions(lesions, prob >= t) for t in dict.fromkeys((0.5, *FROC_THRESHOLDS))}
    ious, areas, fp = matched[0.5]
    found = ious >= LESION_FOUND_IOU
    share = areas / lesions.size
    out = [len(ious), int(found.sum()), fp]
    for _, low, high in SIZE_BINS:
        inside = (share >= low) & (share < high)
        dice = 2 * ious[inside] / (1 + ious[inside])
        out += [int(inside.sum()), int(found[inside].sum()), float(dice.sum())]
    for t in FROC_THRESHOLDS:
        at_t, _, fp_t = matched[t]
        out += [int((at_t >= LESION_FOUND_IOU).sum()), fp_t]
    out += boundary_metrics(lesions > 0, prob >= 0.5)
    return np.asarray(out, dtype=np.float64)


def boundary_metrics(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """How close a predicted mask's boundary lies to the true one, in pixels of the grid: the
    95th-percentile Hausdorff distance (the larger of the two directed 95th percentiles) and
    the normalised surface Dice (the share of both boundaries within :data:`NSD_TOLERANCE` of
    the image's side of the other), as MONAI's ``compute_hausdorff_distance(percentile=95)``
    and ``compute_surface_dice`` define them (a test checks them against MONAI, which takes
    seconds to import in every run). Without a true lesion both are NaN; an empty prediction
    of a lesion has NSD 0 and no HD95 (NaN)."""
    from scipy import ndimage

    truth, pred = np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool)
    if not truth.any():
        return (np.nan, np.nan)
    if not pred.any():
        return (np.nan, 0.0)
    edge_t, edge_p = (m ^ ndimage.binary_erosion(m) for m in (truth, pred))
    to_truth = ndimage.distance_transform_edt(~edge_t)[edge_p]
    to_pred = ndimage.distance_transform_edt(~edge_p)[edge_t]
    hd95 = max(float(np.percentile(to_truth, 95)), float(np.percentile(to_pred, 95)))
    tol = NSD_TOLERANCE * max(truth.shape)
    nsd = ((to_truth <= tol).sum() + (to_pred <= tol).sum()) / (len(to_truth) + len(to_pred))
    return (hd95, float(nsd))

"""Figures written after every evaluation: confusion matrix, ROC, reliability, curves, cases."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medmtl.metrics import ECE_BINS, FROC_FP_RATES, FROC_THRESHOLDS, calibration
from medmtl.reporting.figures import save_figure
from medmtl.reporting.per_image import froc_cpm, froc_curve, risk_coverage

log = logging.getLogger(__name__)


def confusion_figure(
    cm: Sequence[Sequence[int]],
    class_names: Sequence[str],
    title: str,
    predicted_names: Sequence[str] | None = None,
) -> Figure:
    """True classes down, predicted across; ``predicted_names`` when the model has other
    classes than the data (another data set: benign/malignant against normal/benign/malignant)."""
    cm = np.asarray(cm)
    predicted_names = list(predicted_names or class_names)
    fig = Figure(figsize=(4.6, 4.0))
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    ax.set_xticks(range(len(predicted_names)), predicted_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def roc_figure(
    prob: np.ndarray, label: np.ndarray, class_names: Sequence[str], title: str
) -> Figure:
    from sklearn.metrics import auc, roc_curve

    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.subplots()
    for c, name in enumerate(class_names):
        positives = label == c
        if positives.all() or not positives.any():
            continue  # ROC undefined for a class with no positives or no negatives
        fpr, tpr, _ = roc_curve(positives, prob[:, c])
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="0.6")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def reliability(
    prob: np.ndarray, label: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per-bin mean confidence, accuracy and count of the top-class probability, and the ECE
    of ``metrics.json`` (:func:`medmtl.metrics.calibration`). For the diagram the bin of
    confidence exactly 1 is drawn with the top bin; the ECE keeps it apart."""
    cal = calibration(prob, label)
    count, conf, correct = (cal[k][0].copy() for k in ("count", "confidence", "correct"))
    for a in (count, conf, correct):
        a[-2] += a[-1]
    count, conf, correct = count[:-1], conf[:-1], correct[:-1]
    mean_conf = conf / np.maximum(count, 1)
    acc = correct / np.maximum(count, 1)
    return mean_conf, acc, count, float(cal["ece"][0])


def reliability_figure(
    prob: np.ndarray, label: np.ndarray, title: str, before: np.ndarray | None = None
) -> Figure:
    """Accuracy against confidence per bin; with ``before`` (the probabilities without the
    temperature) the uncalibrated model's points and ECE beside the calibrated ones."""
    mean_conf, acc, count, ece = reliability(prob, label)
    centres = (np.arange(ECE_BINS) + 0.5) / ECE_BINS
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.subplots()
    ax.bar(centres[count > 0], acc[count > 0], width=0.09, color="tab:blue", label="accuracy")
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", label="perfect calibration")
    name = "mean confidence" if before is None else "calibrated"
    ax.scatter(mean_conf[count > 0], acc[count > 0], color="tab:red", s=12, label=name)
    heading = f"{title} — ECE {ece:.3f}"
    if before is not None:
        b_conf, b_acc, b_count, b_ece = reliability(before, label)
        ax.plot(b_conf[b_count > 0], b_acc[b_count > 0], "x-", color="0.3", ms=5, lw=0.8,
                label="before calibration")  # fmt: skip
        heading = f"{title} — ECE {b_ece:.3f} → {ece:.3f}"
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(heading)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def risk_coverage_figure(prob: np.ndarray, label: np.ndarray, title: str) -> Figure:
    """Error of the answers kept against the share kept, most certain images first, with the
    AURC and the error at 80 % coverage; the dashed line is the error of answering all."""
    coverage, risk, *_ = risk_coverage(prob, label)
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.subplots()
    ax.plot(coverage[0], risk[0], color="tab:blue")
    ax.axhline(risk[0, -1], ls="--", color="0.5", label=f"answer all: error {risk[0, -1]:.3f}")
    ax.axvline(0.8, ls=":", color="0.6")
    at80 = risk[0, min(int((coverage[0] < 0.8 - 1e-9).sum()), coverage.shape[1] - 1)]
    aurc = float(risk[0].mean())
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(0.05, float(risk[0].max()) * 1.1))
    ax.set_xlabel("coverage (share of images answered, most certain first)")
    ax.set_ylabel("error of the answers kept")
    ax.set_title(f"{title} — AURC {aurc:.3f}, error at 80 % {at80:.3f}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def froc_figure(counts: np.ndarray, title: str, n_boot: int = 1000) -> Figure | None:
    """Lesion sensitivity against false-positive components per image over the mask threshold
    (:func:`~medmtl.reporting.per_image.froc_curve`), with a 95 % bootstrap band over the
    images and the CPM; None when the split has no lesion."""
    from medmtl.reporting.statistics import resample_weights

    fp, sens = froc_curve(counts)
    if np.isnan(sens).all():
        return None
    boot_fp, boot_sens = froc_curve(counts, resample_weights(len(counts), n_boot))
    low, high = np.nanquantile(boot_sens, [0.025, 0.975], axis=0)
    fig = Figure(figsize=(4.8, 4.2))
    ax = fig.subplots()
    ax.fill_between(fp[0], low, high, color="tab:blue", alpha=0.2, step=None, label="95 % CI")
    ax.plot(fp[0], sens[0], "o-", color="tab:blue", ms=3)
    for x, y, t in zip(fp[0], sens[0], FROC_THRESHOLDS, strict=True):
        if t in (0.05, 0.5, 0.95):
            ax.annotate(f"t={t:g}", (x, y), fontsize=7, xytext=(3, -9), textcoords="offset points")
    for rate in FROC_FP_RATES:
        ax.axvline(rate, ls=":", color="0.85", lw=0.8)
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlim(0, max(FROC_FP_RATES[-1], float(boot_fp.max())))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false-positive components per image")
    ax.set_ylabel("lesion sensitivity")
    ax.set_title(f"{title} — CPM {float(froc_cpm(fp, sens)[0]):.3f}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def gate_tradeoff_figure(tuned: dict[str, Any]) -> Figure:
    """Every gate setting :func:`medmtl.workflows.gate.tune_gate` weighed (``gate.json``): its
    out-of-fold normal false-positive rate against its lesion sensitivity (or, without lesion
    counts, the share of lesion images keeping a mask), coloured by mask threshold, with the
    settings no other beats on both (the trade-off curve), the plain gate and the chosen one."""
    rows = tuned["candidates"]
    key = "lesion_sensitivity" if "lesion_sensitivity" in tuned["chosen"] else None

    def y(r: dict[str, Any]) -> float:
        return float(r[key]) if key else 1.0 - float(r["empty_lesion_rate"])

    xs = np.array([float(r["normal_fp_rate"]) for r in rows])
    ys = np.array([y(r) for r in rows])
    thresholds = sorted({r["mask_threshold"] for r in rows})
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.subplots()
    colours = [f"C{i}" for i in range(len(thresholds))]
    for t, c in zip(thresholds, colours, strict=True):
        on = np.array([r["mask_threshold"] == t for r in rows])
        ax.scatter(xs[on], ys[on], s=9, color=c, alpha=0.6, label=f"mask threshold {t:g}")
    order = np.lexsort((-ys, xs))
    front, best = [], -np.inf
    for i in order:  # the upper-left frontier: more found for no more false positives
        if ys[i] > best:
            front.append(i)
            best = ys[i]
    ax.step(xs[front], ys[front], where="post", color="0.3", lw=1, label="trade-off")
    plain, chosen = tuned["plain"], tuned["chosen"]
    ax.scatter([plain["normal_fp_rate"]], [y(plain)], marker="s", s=50, facecolor="none",
               edgecolor="k", label="plain gate")  # fmt: skip
    ax.scatter([chosen["normal_fp_rate"]], [y(chosen)], marker="*", s=140, color="crimson",
               label="chosen")  # fmt: skip
    if tuned.get("target_sensitivity") is not None:
        ax.axhline(tuned["target_sensitivity"], ls="--", color="crimson", lw=0.8,
                   label=f"target {tuned['target_sensitivity']:g}")  # fmt: skip
    ax.set_xlabel("normal images with a false mask (out of fold)")
    ax.set_ylabel("lesion sensitivity (out of fold)" if key else "lesion images with a mask")
    ax.set_title(f"Gate settings on {tuned['num_images']} out-of-fold images", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def curves_figure(metrics_csv: Path) -> Figure | None:
    """Training loss and validation overall/loss per epoch from Lightning's CSV log."""
    if not metrics_csv.exists():
        return None
    rows = list(csv.DictReader(metrics_csv.open()))
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        for key in ("train/loss", "val/loss", "val/overall", "val/seg_dice", "val/cls_f1"):
            value = row.get(key)
            if value not in (None, ""):
                x = float(row.get("epoch") or 0)
                series.setdefault(key, []).append((x, float(value)))
    if not series:
        return None
    # the best checkpoint's validation after fitting is logged one epoch past the last one
    # trained: keep the epochs that were trained
    trained = {x for x, _ in series.get("train/loss", [])}
    if trained:
        series = {k: [(x, y) for x, y in v if x <= max(trained)] for k, v in series.items()}
    fig = Figure(figsize=(9, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    for key in ("train/loss", "val/loss"):
        if key in series:
            xs, ys = zip(*series[key], strict=True)
            if key == "train/loss":  # per-step values: average them per epoch
                xs_u = sorted(set(xs))
                ys = [float(np.mean([y for x, y in series[key] if x == e])) for e in xs_u]
                xs = xs_u
            ax1.plot(xs, ys, marker="o", ms=3, label=key)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    for key in ("val/overall", "val/seg_dice", "val/cls_f1"):
        if key in series:
            xs, ys = zip(*series[key], strict=True)
            ax2.plot(xs, ys, marker="o", ms=3, label=key)
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1)
    ax2.legend()
    fig.tight_layout()
    return fig


def cases_figure(samples: dict[str, Any], class_names: Sequence[str], n: int = 4) -> Figure | None:
    """Worst and best ``n`` images by Dice: image | ground truth | prediction."""
    if "dice" not in samples:
        return None
    dice = samples["dice"].numpy()
    order = np.argsort(dice, kind="stable")
    picks = [("worst", i) for i in order[:n]] + [("best", i) for i in order[::-1][:n]]
    fig = Figure(figsize=(6.6, 2.2 * len(picks)))
    axes = np.asarray(fig.subplots(len(picks), 3)).reshape(len(picks), 3)
    for row, (tag, i) in enumerate(picks):
        img = samples["image"][i, 0].numpy()
        gt = samples["mask"][i, 0].numpy()
        pred = samples["pred_mask"][i, 0].numpy()
        label = class_names[int(samples["label"][i])]
        for col, (title, arr) in enumerate(
            [
                (f"{tag}: {label}", img),
                ("ground truth", gt),
                (f"prediction, Dice {dice[i]:.3f}", pred),
            ]
        ):
            ax = axes[row, col]
            ax.imshow(arr, cmap="gray", vmin=0, vmax=255 if col == 0 else 1)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return fig


def write_evaluation_figures(
    out_dir: Path,
    split: str,
    metrics: dict[str, Any],
    samples: dict[str, Any],
    class_names: Sequence[str],
    metrics_csv: Path | None = None,
) -> list[Path]:
    """Write every figure that the evaluation supports; returns the files written."""
    out_dir = Path(out_dir) / "figures"
    written: list[Path] = []
    label = samples["label"].numpy() if "label" in samples else None
    cm = metrics.get(f"{split}/confusion_matrix")
    if cm is not None:
        written.append(
            save_figure(
                confusion_figure(
                    cm, class_names, f"{split} confusion matrix", metrics.get("eval/model_classes")
                ),
                out_dir / f"{split}_confusion_matrix.png",
            )
        )
    if "prob" in samples and label is not None:
        prob = samples["prob"].numpy().astype(np.float64)
        before = samples.get("prob_uncalibrated")
        before = before.numpy().astype(np.float64) if before is not None else None
        written.append(
            save_figure(
                roc_figure(prob, label, class_names, f"{split} ROC"), out_dir / f"{split}_roc.png"
            )
        )
        written.append(
            save_figure(
                risk_coverage_figure(prob, label, f"{split} risk-coverage"),
                out_dir / f"{split}_risk_coverage.png",
            )
        )
        written.append(
            save_figure(
                reliability_figure(prob, label, f"{split} reliability", before),
                out_dir / f"{split}_reliability.png",
            )
        )
    if "lesion_counts" in samples:
        fig = froc_figure(np.asarray(samples["lesion_counts"], np.float64), f"{split} FROC")
        if fig is not None:
            written.append(save_figure(fig, out_dir / f"{split}_froc.png"))
    fig = cases_figure(samples, class_names)
    if fig is not None:
        written.append(save_figure(fig, out_dir / f"{split}_cases.png"))
    if metrics_csv is not None:
        fig = curves_figure(metrics_csv)
        if fig is not None:
            written.append(save_figure(fig, out_dir / "training_curves.png"))
    return written

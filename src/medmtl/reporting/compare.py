"""Qualitative comparison (the study's Q6/Q7): the same images, ground truth and each model's mask."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from medmtl.data.datamodule import MedDataModule
from medmtl.errors import ConfigError
from medmtl.inference.core import load_for_model, mask_at_original_size, predict_batch
from medmtl.inference.torch_backend import TorchBackend
from medmtl.io.image import read_mask


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    denom = pred.sum() + gt.sum()
    return 1.0 if denom == 0 else float(2 * (pred & gt).sum() / denom)


def pick_cases(labels: Sequence[int], n: int) -> list[int]:
    """``n`` indices spread evenly over the split after sorting by class (all classes appear)."""
    order = sorted(range(len(labels)), key=lambda i: (labels[i], i))
    if n >= len(order):
        return order
    return [order[int(round(k * (len(order) - 1) / max(n - 1, 1)))] for k in range(n)]


def compare_checkpoints(
    ckpt_paths: Sequence[str | Path], split: str = "test", n: int = 12, data_root: str | None = None
) -> Figure:
    """One figure: rows are images; columns image | ground truth | one mask per model (Dice)."""
    if not ckpt_paths:
        raise ConfigError("give ckpt_paths=[a.ckpt,b.ckpt] (one or more checkpoints).")
    backends = [TorchBackend(p) for p in ckpt_paths]
    data_cfgs = [b.hparams["data"] for b in backends]
    first = dict(data_cfgs[0])
    for p, d in zip(ckpt_paths[1:], data_cfgs[1:], strict=True):
        if (d.get("name"), d.get("split_file")) != (first.get("name"), first.get("split_file")):
            raise ConfigError(
                f"{p}: trained on another data set or split than {ckpt_paths[0]}; compare like with like."
            )
    if data_root:
        first["root"] = data_root
    first.pop("_target_", None)
    dm = MedDataModule(**first)
    dm.setup()
    cases = dm.cases(split)
    picks = [cases[i] for i in pick_cases([c.label for c in cases], n)]
    cols = 2 + len(backends)
    fig = Figure(figsize=(2.3 * cols, 2.3 * len(picks)))
    axes = np.asarray(fig.subplots(len(picks), cols)).reshape(len(picks), cols)
    names = [
        f"{b.hparams['model']['arch']}+{b.hparams['model']['encoder']} ({b.task})\n{Path(p).parent.parent.name}"
        for b, p in zip(backends, ckpt_paths, strict=True)
    ]
    for r, case in enumerate(picks):
        loaded = [load_for_model(case.image, b.settings) for b in backends]
        image8 = loaded[0].image8
        gt = np.zeros(image8.shape, dtype=bool)
        for m in case.masks:
            gt |= read_mask(m)
        panels = [(f"{case.case_id}", image8, None), ("ground truth", image8, gt)]
        for b, li, name in zip(backends, loaded, names, strict=True):
            seg_p, _ = predict_batch(b, li.model_input[None, None].astype(np.float32))
            if seg_p is None:
                panels.append((f"{name}\n(no segmentation head)", image8, None))
                continue
            pred = mask_at_original_size(seg_p[0, 0], image8.shape)
            panels.append((f"{name}\nDice {_dice(pred, gt):.3f}", image8, pred))
        for c, (title, img, mask) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            if mask is not None and mask.any():
                ax.contour(mask, levels=[0.5], colors=["yellow" if c == 1 else "red"], linewidths=1)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    return fig

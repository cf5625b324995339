"""medmtl-compare: the same images with the ground truth and each checkpoint's mask (Q6/Q7)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from medmtl.data.build import datamodule_from_config
from medmtl.errors import ConfigError
from medmtl.inference.core import load_for_model, mask_at_original_size, predict_batch
from medmtl.inference.torch_backend import TorchBackend
from medmtl.io.image import read_mask
from medmtl.metrics import mask_dice
from medmtl.reporting.compare import Panel, comparison_figure, pick_cases
from medmtl.reporting.figures import save_figure


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
    dm = datamodule_from_config(first)
    dm.setup()
    cases = dm.cases(split)
    picks = [cases[i] for i in pick_cases([c.label for c in cases], n)]
    names = [
        f"{b.hparams['model']['arch']}+{b.hparams['model']['encoder']} ({b.task})\n"
        f"{Path(p).parent.parent.name}"
        for b, p in zip(backends, ckpt_paths, strict=True)
    ]
    rows = []
    for case in picks:
        loaded = [load_for_model(case.image, b.settings) for b in backends]
        image8 = loaded[0].image8
        gt = np.zeros(image8.shape, dtype=bool)
        for m in case.masks:
            gt |= read_mask(m)
        panels = [Panel(case.case_id, image8), Panel("ground truth", image8, gt, truth=True)]
        for b, li, name in zip(backends, loaded, names, strict=True):
            seg_p, _ = predict_batch(b, li.model_input[None, None].astype(np.float32))
            if seg_p is None:
                panels.append(Panel(f"{name}\n(no segmentation head)", image8))
                continue
            pred = mask_at_original_size(seg_p[0, 0], image8.shape)
            panels.append(Panel(f"{name}\nDice {mask_dice(pred, gt):.3f}", image8, pred))
        rows.append(panels)
    return comparison_figure(rows)


def compare_to_file(
    ckpt_paths: Sequence[str | Path],
    split: str = "test",
    n: int = 12,
    out: str | Path | None = None,
    data_root: str | None = None,
) -> Path:
    """Draw :func:`compare_checkpoints` and save it (default ``compare_<split>.png``)."""
    fig = compare_checkpoints(ckpt_paths, split, n, data_root)
    return save_figure(fig, Path(out or f"compare_{split}.png"))

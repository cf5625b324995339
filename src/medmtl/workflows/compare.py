"""medmtl-compare: the same images with the ground truth and each checkpoint's mask (Q6/Q7),
or, from two evaluations (``medmtl-eval ... save_masks=true``), the images where they disagree."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from medmtl.data.build import datamodule_from_config
from medmtl.errors import ConfigError, DataError
from medmtl.inference.core import load_for_model, mask_at_original_size, predict_batch
from medmtl.inference.torch_backend import TorchBackend
from medmtl.io.image import read_mask
from medmtl.metrics import mask_dice
from medmtl.reporting.compare import Panel, comparison_figure, pick_cases, pick_disagreements
from medmtl.reporting.figures import save_figure
from medmtl.reporting.per_image import PerImage, read_masks, read_predictions
from medmtl.settings.record import read_record


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
            seg_p = predict_batch(b, li.model_input[None, None].astype(np.float32)).seg
            if seg_p is None:
                panels.append(Panel(f"{name}\n(no segmentation head)", image8))
                continue
            pred = mask_at_original_size(seg_p[0, 0], image8.shape)
            panels.append(Panel(f"{name}\nDice {mask_dice(pred, gt):.3f}", image8, pred))
        rows.append(panels)
    return comparison_figure(rows)


def _evaluation(folder: Path) -> tuple[PerImage, dict[str, np.ndarray]]:
    """An evaluation folder's predictions and masks (``save_masks=true``)."""
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        raise DataError(f"{folder}: no metrics.json; give the folders medmtl-eval wrote.")
    split = read_record(metrics).split
    masks = folder / f"masks_{split}.npz"
    if not masks.is_file():
        raise DataError(
            f"{masks}: not found; evaluate again with save_masks=true to keep the masks."
        )
    return read_predictions(folder / f"predictions_{split}.csv"), read_masks(masks)


def compare_evaluations(folders: Sequence[str | Path], n: int = 8) -> Figure:
    """Two evaluations of the same images: rows are the images where the second model's mask
    beats the first's most (a lesion the first misses, a normal image it marks), then the
    reverse; columns image | ground truth | each model's scored mask with its Dice."""
    if len(folders) != 2:
        raise ConfigError(f"evals= takes two evaluation folders, got {len(folders)}.")
    a, b = (Path(str(f)).expanduser() for f in folders)
    (per_a, m_a), (per_b, m_b) = _evaluation(a), _evaluation(b)
    if per_a.ids != per_b.ids or list(m_a["ids"]) != per_a.ids or list(m_b["ids"]) != per_b.ids:
        raise ConfigError(f"{a} and {b} evaluated other images; compare like with like.")
    if per_a.dice is None or per_b.dice is None:
        raise ConfigError("evals=: both evaluations need a segmentation head.")
    picks = pick_disagreements(per_a.dice, per_b.dice, n)
    if not picks:
        raise DataError(f"{a} and {b}: no image where their masks' Dice differ.")
    name_a, name_b = _names(a, b)
    rows = []
    for i in picks:
        image = m_a["image"][i]
        rows.append(
            [
                Panel(f"{per_a.ids[i]}\n{per_a.classes[per_a.label[i]]}", image),
                Panel("ground truth", image, m_a["truth"][i], truth=True),
                Panel(f"{name_a}\nDice {per_a.dice[i]:.3f}", image, m_a["pred"][i]),
                # each mask over its own evaluation's image: two models may score the same
                # images at different input sizes (e.g. 160 and 224 px)
                Panel(f"{name_b}\nDice {per_b.dice[i]:.3f}", m_b["image"][i], m_b["pred"][i]),
            ]
        )
    return comparison_figure(rows)


def _names(a: Path, b: Path) -> tuple[str, str]:
    """Column titles for two evaluation folders: their names, with as many parent folders as
    it takes to tell them apart (``today/test`` and ``v2/test``, not ``test`` twice)."""
    pa, pb = a.resolve().parts, b.resolve().parts
    for k in range(1, max(len(pa), len(pb)) + 1):
        na, nb = "/".join(pa[-k:]), "/".join(pb[-k:])
        if na != nb:
            return na, nb
    return a.name, b.name


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


def compare_evaluations_to_file(
    folders: Sequence[str | Path], n: int = 8, out: str | Path | None = None
) -> Path:
    """Draw :func:`compare_evaluations` and save it (default ``compare_evaluations.png``)."""
    fig = compare_evaluations(folders, n)
    return save_figure(fig, Path(out or "compare_evaluations.png"))

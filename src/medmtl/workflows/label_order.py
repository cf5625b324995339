"""Which unlabelled images of a new site to label first (``medmtl-predict label_order=true``):
the most informative first, each unlike those already chosen.

- **Informative.** An image's ``informativeness`` is the mean of what the model says about
  its own doubt: the class probabilities' normalised entropy, the members' (or the mirror's)
  ``class_disagreement`` and ``1 - mask_agreement``, each in [0, 1], as far as the model gives
  them (:func:`medmtl.inference.core.uncertainty_row`).
- **Diverse.** The images' pooled encoder features, on each member's whitened shift-test
  projection (:mod:`medmtl.models.shift`; standardised features for a model without one),
  concatenated over the members. The first image is the most informative; each next one
  maximises ``(FLOOR + informativeness) × distance``, its distance to the nearest image
  already chosen divided by the largest such distance (a greedy k-centre walk weighted by
  doubt: a doubtful image like one already chosen waits, and so does a certain one).
- **Balanced by predicted class.** Each turn picks among the images of the predicted class
  (``predicted_class``) chosen least so far, so the classes take turns while each has images
  left. On a new scanner the model doubts some classes far more than others; ranked by doubt
  alone, the Logiq 7 patients of the first 50 cases had 46 benign and 5 malignant images
  (docs/results.md, issue 43), and a site's fine-tuning and its answer sets need the rare
  class too.
- **Near copies last.** An image in one near-copy group with an image already chosen
  (:func:`medmtl.data.duplicates.near_copies`) comes after every other image: labelling the
  same lesion twice teaches little.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medmtl.models.shift import ShiftReference, as_members

LABEL_ORDER_CSV = "label_order.csv"
# an image the model is sure of still counts for its place in feature space
FLOOR = 0.05
COLUMNS = (
    "rank",
    "file",
    "predicted_class",
    "informativeness",
    "entropy",
    "class_disagreement",
    "mask_agreement",
    "distance",
    "near_copy_of",
)


def informativeness(row: Mapping[str, Any]) -> float:
    """The mean of the doubt measures the predictions row has (0 when it has none)."""
    parts = [
        float(row[k]) for k in ("entropy", "class_disagreement") if row.get(k) not in (None, "")
    ]
    if row.get("mask_agreement") not in (None, ""):
        parts.append(1.0 - float(row["mask_agreement"]))
    return float(np.mean(parts)) if parts else 0.0


def feature_space(features: np.ndarray, references: Sequence[ShiftReference]) -> np.ndarray:
    """(n, M, D) pooled features -> (n, F): each member's whitened projection, concatenated;
    without references, the first member's features standardised dimension by dimension."""
    features = as_members(np.asarray(features, dtype=np.float64))
    if references:
        return np.concatenate(
            [ref.project(features[:, k]) for k, ref in enumerate(references)], axis=1
        )
    x = features[:, 0]
    spread = x.std(0)
    return (x - x.mean(0)) / np.where(spread > 0, spread, 1.0)


def label_order(
    rows: Sequence[Mapping[str, Any]],
    features: np.ndarray,
    groups: Sequence[int],
    references: Sequence[ShiftReference] = (),
) -> list[dict[str, Any]]:
    """The order in which to label the images of ``rows`` (predictions rows with ``file`` and,
    where the model classifies, ``predicted_class``), given their pooled ``features`` and
    near-copy ``groups``: one dict per image with the :data:`COLUMNS`, first to label first."""
    n = len(rows)
    if not (len(features) == len(groups) == n):
        raise ValueError(f"{n} rows, {len(features)} features and {len(groups)} groups.")
    if n == 0:
        return []
    u = np.array([informativeness(r) for r in rows])
    z = feature_space(features, references)
    predicted = np.array([str(r.get("predicted_class") or "") for r in rows])
    taken = dict.fromkeys(predicted.tolist(), 0)
    nearest = np.full(n, np.inf)
    chosen: list[int] = []
    first_of: dict[int, int] = {}
    out: list[dict[str, Any]] = []
    left = np.ones(n, dtype=bool)
    while left.any():
        copies = np.array([groups[i] in first_of for i in range(n)])
        pool = left & ~copies if (left & ~copies).any() else left
        least = min(taken[c] for c in set(predicted[pool].tolist()))
        pool &= np.array([taken[c] == least for c in predicted.tolist()])
        if not chosen:
            score, distance = u + FLOOR, np.full(n, np.nan)
        else:
            reach = nearest[pool].max()
            distance = nearest / reach if reach > 0 else np.zeros(n)
            score = (FLOOR + u) * distance
        pick = int(np.flatnonzero(pool)[np.argmax(score[pool])])
        row = rows[pick]
        out.append({
            "rank": len(out) + 1,
            "file": row["file"],
            "predicted_class": predicted[pick],
            "informativeness": round(float(u[pick]), 6),
            "entropy": row.get("entropy", ""),
            "class_disagreement": row.get("class_disagreement", ""),
            "mask_agreement": row.get("mask_agreement", ""),
            "distance": "" if np.isnan(distance[pick]) else round(float(distance[pick]), 6),
            "near_copy_of": rows[first_of[groups[pick]]]["file"] if copies[pick] else "",
        })  # fmt: skip
        first_of.setdefault(groups[pick], pick)
        taken[predicted[pick]] += 1
        chosen.append(pick)
        left[pick] = False
        nearest = np.minimum(nearest, np.linalg.norm(z - z[pick], axis=1))
    return out


def write_label_order(
    out: Path,
    rows: Sequence[Mapping[str, Any]],
    features: Sequence[np.ndarray],
    groups: Sequence[int],
    references: Sequence[ShiftReference] = (),
) -> Path:
    """``out/label_order.csv`` of the predicted images, given their near-copy ``groups``
    (moved into place when complete)."""
    from medmtl.io.files import CsvRows

    order = label_order(rows, np.stack(features), groups, references)
    csv_rows = CsvRows(out / LABEL_ORDER_CSV, list(COLUMNS))
    for row in order:
        csv_rows.add(row)
    return csv_rows.close()

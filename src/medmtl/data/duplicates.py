"""Near-duplicate detection: Pearson correlation of small grey thumbnails, grouped transitively.

BUSI has many near-copies (re-crops, the same scan with other overlays), some across classes.
Two images whose ``size``×``size`` thumbnails correlate at ``threshold`` or more are linked, and
linked images form one group (union-find), which a split must keep on one side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from medmtl.preprocess.pipeline import convert_to_uint8
from medmtl.settings.data import Conversion, Dedup


@dataclass(frozen=True)
class DuplicateGroups:
    """Group id per case (singletons get their own id) and the linked pairs with correlation."""

    group_of: list[int]
    pairs: list[tuple[int, int, float]]

    def members(self) -> dict[int, list[int]]:
        """Groups with more than one member, as group id -> case indices."""
        out: dict[int, list[int]] = {}
        for i, g in enumerate(self.group_of):
            out.setdefault(g, []).append(i)
        return {g: m for g, m in out.items() if len(m) > 1}


class _Groups:
    """Union-find over ``n`` items: linked items end up in one group."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)

    def numbered(self) -> list[int]:
        """Group ids 0..G-1, in order of first appearance (split files stay readable)."""
        ids: dict[int, int] = {}
        return [ids.setdefault(self.find(i), len(ids)) for i in range(len(self.parent))]


def thumbnail(image: np.ndarray, size: int = 32) -> np.ndarray:
    """The image compared for near duplicates: its plain full-range 8-bit grey version
    (whatever the training preprocessing), area-averaged to ``size``×``size`` float32.

    The split (through the cache) and the audit both use this, so they find the same groups.
    """
    grey8 = convert_to_uint8(image, Conversion())
    return cv2.resize(grey8.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)


def find_groups(thumbnails: Sequence[np.ndarray], threshold: float = 0.95) -> DuplicateGroups:
    """Link thumbnails whose Pearson correlation is >= ``threshold`` and group them transitively.

    A constant thumbnail has no defined correlation and is linked only to identical ones.
    """
    n = len(thumbnails)
    flat = np.stack([t.ravel().astype(np.float64) for t in thumbnails]) if n else np.zeros((0, 1))
    centred = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(centred, axis=1, keepdims=True)
    constant = norm[:, 0] == 0
    z = np.divide(centred, norm, out=np.zeros_like(centred), where=norm > 0)
    corr = z @ z.T

    pairs: list[tuple[int, int, float]] = []
    ii, jj = np.nonzero(np.triu(corr >= threshold, k=1))
    for i, j in zip(ii.tolist(), jj.tolist(), strict=True):
        pairs.append((i, j, float(corr[i, j])))
    const_idx = np.flatnonzero(constant)
    for a, i in enumerate(const_idx):
        for j in const_idx[a + 1 :]:
            if np.array_equal(flat[i], flat[j]):
                pairs.append((int(i), int(j), 1.0))
    groups = _Groups(n)
    for i, j, _ in pairs:
        groups.union(i, j)
    return DuplicateGroups(group_of=groups.numbered(), pairs=pairs)


def combine_groups(found: DuplicateGroups, given: Sequence[str | None]) -> list[int]:
    """Groups that keep both near-duplicates and the data set's own groups (patients, cases)
    together: images linked either way are in one group. Renumbered 0..G-1 by first appearance."""
    groups = _Groups(len(given))
    first: dict[tuple[str, object], int] = {}
    for i, g in enumerate(given):
        if g is not None:
            groups.union(first.setdefault(("given", g), i), i)
    for i, g in enumerate(found.group_of):
        groups.union(first.setdefault(("found", g), i), i)
    return groups.numbered()


def near_copies(
    thumbs: Sequence[np.ndarray], given: Sequence[str | None] | None = None
) -> list[int]:
    """A group id per image of a set to test together (the shift test, the labelling order):
    images whose thumbnails correlate at ``data.dedup``'s default threshold share one, and so
    do images of one ``given`` group (a patient), as the splits group them."""
    found = find_groups(list(thumbs), Dedup().threshold)
    return combine_groups(found, given) if given is not None else found.group_of

"""Validation-only check of the shift test's level with near copies counted once.

For each fold model: its validation fold (BUSI, images it never trained on) is halved by
split group (near copies + patients, as medmtl's split keeps them). The reference is one
half, one image per group (as ShiftReference.fit(groups=) stores it); random batches of 20
are drawn from the other half and tested with near copies found from thumbnails (as a user's
batch is). Share flagged at p < 0.01 over 200 batches; also without any collapsing (the old
behaviour) for comparison (docs/results.md, issue 43).
Run: python scripts/shift_halves.py <sweep folder> [members...]
"""

import sys
from pathlib import Path

import numpy as np

from medmtl.data.build import datamodule_from_config
from medmtl.data.duplicates import near_copies
from medmtl.models.shift import ShiftReference, shift_test
from medmtl.workflows.calibrate import split_features
from medmtl.workflows.members import best_checkpoint, open_model

sweep = Path(sys.argv[1])
members = sys.argv[2:] or ["0", "1"]
for m in members:
    opened = open_model(best_checkpoint(sweep / m))
    dm = datamodule_from_config(dict(opened.data))
    dm.prepare_data()
    dm.setup("fit")
    feats, _ = split_features(opened.module, dm, "val")
    groups = np.array(dm.split_groups("val"))
    thumbs = [c.thumb for c in dm.cached("val")]
    ref = opened.module.net.shift_reference()
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        uniq = rng.permutation(np.unique(groups))
        half_a = np.isin(groups, uniq[: len(uniq) // 2])
        a, b = np.flatnonzero(half_a), np.flatnonzero(~half_a)
        res = {}
        for mode in ("old", "new"):
            if mode == "new":
                _, first = np.unique(groups[a], return_index=True)
                keep = a[np.sort(first)]
            else:
                keep = a
            r = ShiftReference(ref.mean, ref.components, ref.project(feats[keep]))
            flagged = 0
            rb = np.random.default_rng(100 + seed)
            for rep in range(200):
                pick = rb.choice(b, 20, replace=False)
                g = near_copies([thumbs[i] for i in pick]) if mode == "new" else None
                flagged += shift_test([r], feats[pick], seed=rep, groups=g).shifted
            res[mode] = (flagged, len(keep))
        print(
            f"member {m} halves seed {seed}: reference {len(a)} images "
            f"({res['new'][1]} groups), batches of 20 from {len(b)}: flagged "
            f"old {res['old'][0]}/200, near copies once {res['new'][0]}/200",
            flush=True,
        )

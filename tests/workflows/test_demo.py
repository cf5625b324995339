"""`make demo` really learns the phantom (slow: about 4 minutes; run with `make test-full`)."""

from __future__ import annotations

import pytest

from medmtl.workflows.train import train


@pytest.mark.slow
def test_demo_reaches_the_promised_quality(make_cfg):
    metrics = train(make_cfg(["experiment=demo"], name="demo"))
    assert metrics["test/seg_dice"] >= 0.70
    assert metrics["test/cls_acc"] >= 0.80

"""data=multi and experiment=lodo: several data sets, each left out in turn."""

from __future__ import annotations

import csv
import json

import pytest

from medmtl.reporting.per_image import read_predictions
from medmtl.reporting.runs import collect_runs
from medmtl.reporting.tables import build_table, table_cells
from tests.conftest import TINY_MODEL, run_cli

PHANTOM = [
    "~data.sets.busi",
    "+data@data.sets.phantom=phantom",
    "data.sets.phantom.phantom.counts.normal=10",
    "data.sets.phantom.phantom.counts.benign=15",
    "data.sets.phantom.phantom.counts.malignant=15",
    "data.sets.phantom.phantom.size=96",
]


@pytest.mark.slow  # a sweep of its own; make test-full (the multi data module: the next test)
def test_tiny_leave_one_data_set_out_sweep_and_its_table(busbra, tmp_path, cache_dir):
    sweep = tmp_path / "lodo"
    res = run_cli(
        "train",
        "-m",
        "experiment=lodo",
        *PHANTOM,
        f"data.sets.busbra.root={busbra}",
        *TINY_MODEL,
        "trainer.max_epochs=1",
        "data.leave_out=phantom,busbra",
        f"paths.cache_dir={cache_dir}",
        f"paths.output_root={tmp_path}",
        f"hydra.sweep.dir={sweep}",
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    jobs = sorted(sweep.glob("[0-9]"))
    names = [json.loads((j / "metrics.json").read_text())["data/name"] for j in jobs]
    assert names == ["multi", "multi"]  # two jobs, both data=multi
    for job in jobs:
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        left_out = "busbra" if "data.leave_out=busbra" in overrides else "phantom"
        metrics = json.loads((job / "metrics.json").read_text())
        per = read_predictions(job / "predictions_test.csv")
        # the test split is every image of the data set left out, and only those
        assert set(per.datasets()) == {left_out}
        assert len(per) == (24 if left_out == "busbra" else 40)
        if left_out == "busbra":  # benign/malignant only: scored over those two classes
            assert metrics["eval/classes"] == ["benign", "malignant"]
            assert "test/called_normal_rate" in metrics and "test/cls_auc" in metrics
        else:
            assert metrics["eval/classes"] == ["normal", "benign", "malignant"]
    table = build_table(collect_runs(sweep), sweep)
    assert table.kind == "lodo"
    assert table.labels() == [
        "test on busbra (trained on the others)",
        "test on phantom (trained on the others)",
    ]
    header, texts, _ = table_cells(table, ci=True)
    for row in texts:
        assert (
            row[header.index("Acc")][0].isdigit() and row[header.index("Dice lesion")][0].isdigit()
        )


def test_multi_keeps_each_split_and_reports_per_data_set(busbra, tmp_path, cache_dir):
    from medmtl.workflows.train import train
    from tests.conftest import compose_cfg

    out = tmp_path / "multi"
    cfg = compose_cfg(
        [
            "data=multi",
            *PHANTOM,
            f"data.sets.busbra.root={busbra}",
            *TINY_MODEL,
            "trainer.max_epochs=1",
            f"paths.output_root={tmp_path}",
        ],
        out,
        cache_dir,
    )
    metrics = train(cfg)
    per = read_predictions(out / "predictions_test.csv")
    assert set(per.datasets()) == {"phantom", "busbra"}
    # each data set's test images are its own split's: phantom 8 (20 %), BUS-BRA fold 1
    assert per.datasets().count("phantom") == 8
    with (busbra / "5-fold-cv.csv").open(newline="") as fh:
        fold1 = [r for r in csv.DictReader(fh) if r["kFold"] == "1"]
    assert per.datasets().count("busbra") == len(fold1)
    for name in ("phantom", "busbra"):
        assert metrics[f"test/dataset={name}/n"] == per.datasets().count(name)
        assert f"test/dataset={name}/seg_dice_lesion" in metrics
    assert "| busbra |" in (out / "by_dataset.md").read_text()

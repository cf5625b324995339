"""medmtl-ensemble: k runs evaluated as one model (mean of probabilities), and exported."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medmtl.reporting.per_image import read_predictions
from medmtl.workflows.ensemble import ensemble
from tests.conftest import train_tiny


@pytest.fixture(scope="module")
def second_run(tmp_path_factory, cache_dir) -> Path:
    return train_tiny(tmp_path_factory.mktemp("tiny_run_2"), cache_dir, seed=2)


def test_ensemble_of_one_run_equals_the_run(tiny_run, tmp_path):
    m = ensemble([tiny_run], tmp_path / "ens1")
    run = json.loads((tiny_run / "metrics.json").read_text())
    keys = [k for k in run if k.startswith("test/")]
    assert len(keys) > 20
    for k in keys:
        a, b = run[k], m[k]
        if isinstance(a, list):
            assert a == b, k
        elif a is None:
            assert b is None or np.isnan(b), k
        else:
            assert abs(a - b) < 1e-5, (k, a, b)
    p, q = (read_predictions(d / "predictions_test.csv") for d in (tiny_run, tmp_path / "ens1"))
    assert p.ids == q.ids and np.allclose(p.prob, q.prob, atol=1e-6)
    assert np.array_equal(p.pred, q.pred) and np.array_equal(p.tp, q.tp)


def test_two_runs_average_and_export(tiny_run, second_run, tmp_path, cache_dir):
    out = tmp_path / "ens"
    onnx_path = tmp_path / "ens.onnx"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "medmtl.cli.ensemble",
            str(tiny_run),
            str(second_run),
            f"out={out}",
            f"export={onnx_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["ensemble/size"] == 2 and len(m["ensemble/members"]) == 2
    assert (out / "figures" / "test_confusion_matrix.png").exists()
    ens = read_predictions(out / "predictions_test.csv")
    a, b = (read_predictions(r / "predictions_test.csv") for r in (tiny_run, second_run))
    assert np.allclose(ens.prob, (a.prob + b.prob) / 2, atol=1e-5)  # the mean of the members
    # the exported ensemble predicts through the ONNX backend like any model
    img = sorted((cache_dir / "phantom").rglob("*.png"))
    img = next(p for p in img if "_mask" not in p.name)
    pred_out = tmp_path / "pred"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "medmtl.cli.predict",
            "backend=onnx",
            f"model={onnx_path}",
            f"input={img}",
            f"out={pred_out}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    rows = list(csv.DictReader((pred_out / "predictions.csv").open()))
    assert len(rows) == 1 and rows[0]["predicted_class"]


def test_refusals(tiny_run, tmp_path):
    from medmtl.errors import ConfigError, DataError

    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds results"):
        ensemble([tiny_run], tmp_path / "done")
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_run, sweep / "0")
    (sweep / "1" / ".hydra").mkdir(parents=True)
    (sweep / "1" / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (sweep / "1" / "failed.json").write_text('{"error": "boom"}')
    with pytest.raises(DataError, match="did not finish"):
        ensemble([sweep], tmp_path / "e")
    with pytest.raises(ConfigError, match="folder not found"):
        ensemble([tmp_path / "nope"], tmp_path / "e")


def test_ensemble_test_time_flip_equals_eval_tta(tiny_run, tiny_ckpt, tmp_path, make_cfg):
    """tta=true in an ensemble is the member's own test-time flip (medmtl-eval tta=true)."""
    from medmtl.workflows.evaluate import evaluate

    m = ensemble([tiny_run], tmp_path / "ens_tta", tta=True)
    assert m["ensemble/tta"] is True
    evaluate(make_cfg([f"ckpt_path={tiny_ckpt}", "tta=true"], name="eval", config_name="eval"))
    ens = read_predictions(tmp_path / "ens_tta" / "predictions_test.csv")
    ev = read_predictions(tmp_path / "eval" / "predictions_test.csv")
    plain = read_predictions(tiny_run / "predictions_test.csv")
    assert ens.ids == ev.ids and np.allclose(ens.prob, ev.prob, atol=1e-5)
    assert not np.allclose(ens.prob, plain.prob, atol=1e-5)  # the flip changed something


ENSEMBLE_CALLBACK = (
    "+hydra.callbacks.ensemble._target_=medmtl.workflows.ensemble.EnsembleAfterSweep"
)


def _fold_sweep(sweep: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    from tests.reporting.test_sweeps_tables import _train_multirun

    return _train_multirun(sweep, cache, ENSEMBLE_CALLBACK, *extra)


def test_fold_sweep_is_ensembled_when_it_ends(tmp_path, cache_dir):
    """The recipe's callback: a sweep over folds ends with its ensemble tested in <sweep>/ensemble."""
    sweep = tmp_path / "folds"
    res = _fold_sweep(sweep, cache_dir, "data.num_folds=2", "data.fold=0,1", "tta=true")
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((sweep / "ensemble" / "metrics.json").read_text())
    assert m["ensemble/size"] == 2 and m["ensemble/folds"] == [0, 1] and m["ensemble/tta"] is True
    assert (sweep / "ensemble" / "predictions_test.csv").is_file()
    # a sweep over two settings is two table rows: no ensemble, and the command to make one
    mixed = tmp_path / "mixed"
    res = _fold_sweep(mixed, cache_dir, "loss.seg_weight=0.3,0.7")
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (mixed / "ensemble").exists()
    said = res.stdout + res.stderr
    assert "Not ensembling" in said and "medmtl-ensemble" in said, said[-2000:]


@pytest.mark.parametrize(
    "key, a, b",
    [
        ("leave_out", "busi", "busbra"),  # lodo runs that each tested on another data set
        ("busbra", {"folds": 5, "test_fold": 1}, {"folds": 5, "test_fold": 2}),
        ("class_map", {"B": "benign"}, {"B": "malignant"}),
        ("columns", {"label": "label"}, {"label": "birads"}),
    ],
)
def test_members_that_saw_other_images_are_refused(key, a, b):
    """The data settings of the data sources (folds, labels, the data set left out) must agree:
    otherwise one member's test images are another's training images."""
    from medmtl.errors import ConfigError
    from medmtl.workflows.ensemble import _common_data

    def member(value, root):
        return {"data": {"name": "d", "root": root, key: value}, "class_names": ["x"]}

    with pytest.raises(ConfigError, match=f"other data settings .*\\({key}\\)"):
        _common_data([(Path("r1"), member(a, "/data")), (Path("r2"), member(b, "/data"))])
    # where the data lies may differ: the same data set moved
    assert _common_data([(Path("r1"), member(a, "/data")), (Path("r2"), member(a, "/moved"))])

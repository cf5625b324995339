"""External validation: a model evaluated on another data set with other classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medmtl.errors import ConfigError
from medmtl.reporting.breakdown import breakdown, flat_metrics
from medmtl.reporting.per_image import (
    PerImage,
    compute_metrics,
    metrics_dict,
    read_masks,
    read_predictions,
    restrict,
    write_masks,
    write_predictions,
)
from medmtl.reporting.runs import collect_runs
from medmtl.reporting.tables import COLUMN_SETS, build_table, table_cells
from medmtl.workflows.evaluate import class_mapping
from tests.conftest import compose_cfg, run_cli

MODEL = ("normal", "benign", "malignant")


def test_scores_over_the_mapped_classes_known_auc_accuracy_and_misses(tmp_path):
    # P(normal), P(benign), P(malignant) of a normal/benign/malignant model on B/M images
    prob = np.array(
        [
            [0.1, 0.6, 0.3],  # benign, right: malignant share 1/3
            [0.7, 0.2, 0.1],  # benign, called normal (a miss), still benign over B/M: 1/3
            [0.2, 0.3, 0.5],  # malignant, right: 0.625
            [0.1, 0.6, 0.3],  # malignant, wrong: 1/3, tied with both benign images
        ]
    )
    label = np.array([1, 1, 2, 2])  # in the model's class order
    per = restrict(
        PerImage(["a", "b", "c", "d"], MODEL, label, prob), MODEL, ["benign", "malignant"]
    )
    assert per.classes == ("benign", "malignant") and per.label.tolist() == [0, 0, 1, 1]
    assert per.prob[:, 1] == pytest.approx([1 / 3, 1 / 3, 0.625, 1 / 3])
    m = {k: float(v[0]) for k, v in compute_metrics(per).items() if k != "confusion_matrix"}
    assert m["cls_acc"] == pytest.approx(0.75)  # arg-max over benign and malignant
    # AUC from P(malignant) / (P(benign) + P(malignant)): one pair won, two ties, one won
    assert m["cls_auc"] == pytest.approx(0.75)
    assert m["called_normal_rate"] == pytest.approx(0.25)
    # the predictions file carries everything: the same numbers come back from it
    f = write_predictions(tmp_path / "predictions_all.csv", per)
    assert "called_normal" in f.read_text().splitlines()[0]
    again = metrics_dict(read_predictions(f), "all")
    assert again["all/called_normal_rate"] == pytest.approx(0.25)
    assert again["all/cls_auc"] == pytest.approx(0.75)


def test_auc_agrees_with_scikit_learn_on_random_probabilities():
    rng = np.random.default_rng(0)
    prob = rng.dirichlet([1, 1, 1], size=300)
    label = rng.integers(1, 3, size=300)
    per = restrict(
        PerImage([str(i) for i in range(300)], MODEL, label, prob), MODEL, ["benign", "malignant"]
    )
    score = prob[:, 2] / (prob[:, 1] + prob[:, 2])
    want = roc_auc_score(label == 2, score)
    assert float(compute_metrics(per)["cls_auc"][0]) == pytest.approx(want, abs=1e-9)
    acc = ((score >= 0.5) == (label == 2)).mean()
    assert float(compute_metrics(per)["cls_acc"][0]) == pytest.approx(acc)


def test_breakdown_by_a_metadata_column():
    prob = np.tile([[0.1, 0.3, 0.6]], (6, 1))
    label = np.array([2, 2, 1, 2, 1, 1])
    per = restrict(
        PerImage([str(i) for i in range(6)], MODEL, label, prob, meta={"Device": list("AABBBB")}),
        MODEL,
        ["benign", "malignant"],
    )
    groups = breakdown(per, "Device", n_boot=200)
    assert [(g.value, g.n) for g in groups] == [("A", 2), ("B", 4)]
    assert groups[0].metrics["cls_acc"] == 1.0 and groups[1].metrics["cls_acc"] == 0.25
    flat = flat_metrics(groups, "all")
    assert flat["all/Device=B/n"] == 4 and flat["all/Device=A/cls_acc"] == 1.0


def test_class_mapping_rules():
    assert class_mapping(["benign", "malignant"], MODEL, None) == {
        "benign": "benign",
        "malignant": "malignant",
    }
    assert class_mapping(["B", "M"], MODEL, {"B": "benign", "M": "malignant"})["M"] == "malignant"
    with pytest.raises(
        ConfigError, match=r"class_map: the data's class\(es\) M have no model class"
    ):
        class_mapping(["B", "M"], MODEL, {"B": "benign"})
    with pytest.raises(ConfigError, match=r"class_map: lesion is not a class of the model"):
        class_mapping(["lesion"], MODEL, None)


def test_a_phantom_model_on_bus_bra(tiny_ckpt, busbra, tmp_path, cache_dir):
    """medmtl-eval ckpt_path=<model> data=busbra split=all by=Device, end to end."""
    from medmtl.workflows.evaluate import evaluate

    out = tmp_path / "ext"
    cfg = compose_cfg(
        [
            f"ckpt_path={tiny_ckpt}",
            "data=busbra",
            f"data.root={busbra}",
            "split=all",
            "by=Device",
            "save_masks=true",
        ],
        out,
        cache_dir,
        config_name="eval",
    )
    metrics = evaluate(cfg)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["eval/split"] == "all" and saved["eval/classes"] == ["benign", "malignant"]
    assert saved["num_images"] == 24 and saved["data/name"] == "busbra"
    # the confusion matrix keeps the model's classes: true benign/malignant x predicted n/b/m
    cm = np.array(saved["all/confusion_matrix"])
    assert cm.shape == (2, 3) and saved["eval/model_classes"] == list(MODEL)
    assert cm.sum(1).tolist() == [12, 12]
    assert cm[:, 0].sum() / 24 == pytest.approx(saved["all/called_normal_rate"])
    assert saved["model/encoder_weights"] == "lite0_offline"  # the evaluated model's weights
    for key in ("cls_acc", "cls_auc", "called_normal_rate", "seg_dice_lesion", "seg_iou_lesion"):
        assert f"all/{key}" in saved, key
    # every number comes back from the per-image file, which keeps the metadata columns
    per = read_predictions(out / "predictions_all.csv")
    assert per.classes == ("benign", "malignant") and set(per.meta) >= {"Device", "ID", "Side"}
    for key, value in metrics_dict(per, "all").items():
        if isinstance(value, float) and np.isfinite(value):
            tol = 1e-4 if key.endswith(("auc", "ece")) else 1e-6
            assert metrics[key] == pytest.approx(value, abs=tol), key
    # save_masks=true: the images and the masks that were scored, in the file's image order
    masks = read_masks(out / "masks_all.npz")
    assert list(masks["ids"]) == per.ids and masks["image"].shape == (24, 64, 64)
    assert masks["image"].dtype == np.uint8 and masks["image"].max() > 0
    tp = (masks["truth"] & masks["pred"]).sum((1, 2))
    assert np.array_equal(masks["truth"].sum((1, 2)), per.gt)
    assert np.array_equal(masks["pred"].sum((1, 2)), per.pred) and np.array_equal(tp, per.tp)
    malignant = per.label == 1
    assert saved["all/cls_auc"] == pytest.approx(roc_auc_score(malignant, per.prob[:, 1]), abs=1e-6)
    # by=Device: each scanner's numbers, in metrics.json and as a table with CIs
    devices = sorted(set(per.meta["Device"]))
    assert len(devices) == 2
    for d in devices:
        n = per.meta["Device"].count(d)
        assert saved[f"all/Device={d}/n"] == n
    table = (out / "by_Device.md").read_text()
    assert all(f"| {d} |" in table for d in devices) and "95 % bootstrap CI" in table
    # detection per scanner: the lesion images left empty and the images called normal
    header = table.splitlines()[0]
    assert "| lesions empty |" in header and "| called normal |" in header
    assert all(f"all/Device={d}/empty_lesion_rate" in saved for d in devices)
    # the model's own classes the data set lacks are refused without a map that fits
    bad = compose_cfg(
        [
            f"ckpt_path={tiny_ckpt}",
            "data=busbra",
            f"data.root={busbra}",
            "split=all",
            "data.classes=[benign,malignant]",
            "class_map={benign: benign, malignant: tumour}",
        ],
        tmp_path / "bad",
        cache_dir,
        config_name="eval",
    )
    with pytest.raises(ConfigError, match="tumour is not a class of the model"):
        evaluate(bad)


def test_tables_accept_external_evaluations(tiny_ckpt, busbra, tmp_path, cache_dir):
    sweep = tmp_path / "external"
    for job, tta in enumerate(("false", "true")):
        res = run_cli(
            "eval",
            f"ckpt_path={tiny_ckpt}",
            "data=busbra",
            f"data.root={busbra}",
            "split=all",
            f"tta={tta}",
            f"paths.cache_dir={cache_dir}",
            f"hydra.run.dir={sweep / str(job)}",
            timeout=600,
        )
        assert res.returncode == 0, res.stderr[-3000:]
    table = build_table(collect_runs(sweep), sweep)
    assert table.labels() == ["tta=false", "tta=true"]
    header, texts, _ = table_cells(table, ci=True)
    for row in texts:
        acc = row[header.index("Acc")]
        assert acc[0].isdigit() and "[" in acc  # a value and its bootstrap CI over the images
        assert row[header.index("Dice lesion")][0].isdigit()
    # the recipe columns report detection too: lesion images left empty, images called normal
    header, texts, _ = table_cells(table, COLUMN_SETS["recipe"], ci=True)
    saved = json.loads((sweep / "0" / "metrics.json").read_text())
    for col, key in (
        ("lesions empty", "all/empty_lesion_rate"),
        ("called normal", "all/called_normal_rate"),
    ):
        cell = texts[0][header.index(col)]
        assert cell.startswith(f"{saved[key]:.3f} [") and cell.endswith("]"), (col, cell)


def _evaluation(folder, ids, truth, pred, label):
    """A constructed medmtl-eval folder: metrics.json, predictions_test.csv, masks_test.npz."""
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"eval/split": "test"}))
    per = PerImage(
        ids=ids,
        classes=MODEL,
        label=label,
        prob=np.full((len(ids), 3), 1 / 3),
        tp=(truth & pred).sum((1, 2)),
        gt=truth.sum((1, 2)),
        pred=pred.sum((1, 2)),
        split="test",
    )
    write_predictions(folder / "predictions_test.csv", per)
    samples = {
        "index": np.arange(len(ids))[::-1].copy(),  # the test run's batch order is not the file's
        "image": np.zeros((len(ids), 1, *truth.shape[1:]), np.uint8)[::-1],
        "mask": truth[::-1, None],
        "pred_mask": pred[::-1, None],
    }
    write_masks(folder / "masks_test.npz", ids, samples)


def test_compare_two_evaluations_picks_where_they_disagree(tmp_path):
    """medmtl-compare evals=[a,b]: the images where b beats a most, then the reverse."""
    from medmtl.errors import DataError
    from medmtl.workflows.compare import compare_evaluations, compare_evaluations_to_file

    n = 6
    truth = np.zeros((n, 8, 8), bool)
    truth[1:, 2:6, 2:6] = True  # image 0 is normal, 1-5 have a 4x4 lesion
    a = np.zeros_like(truth)
    b = np.zeros_like(truth)
    a[2, 2:6, 2:6] = True  # a finds lesion 2 (Dice 1), b misses it
    b[3, 2:6, 2:6] = b[4, 2:4, 2:6] = True  # b finds 3 (Dice 1) and half of 4 (2/3), a misses
    a[0] = a[5] = b[5] = True  # a false positive on the normal image; 5: the same for both
    ids = [f"img{i}" for i in range(n)]
    label = np.array([0, 1, 1, 2, 2, 1])
    _evaluation(tmp_path / "a", ids, truth, a, label)
    _evaluation(tmp_path / "b", ids, truth, b, label)
    masks = read_masks(tmp_path / "a" / "masks_test.npz")
    assert np.array_equal(masks["pred"], a) and list(masks["ids"]) == ids  # in the file's order
    fig = compare_evaluations([tmp_path / "a", tmp_path / "b"], n=4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    rows = [t.split("\n")[0] for t in titles if t.startswith("img")]
    # b's gains first (largest first: a's false positive on the normal image, the lesion a
    # missed, the half-found one), then a's; never the tie
    assert rows == ["img0", "img3", "img4", "img2"]
    assert "b\nDice 0.667" in titles and "a\nDice 1.000" in titles
    out = compare_evaluations_to_file([tmp_path / "a", tmp_path / "b"], out=tmp_path / "c.png")
    assert out.stat().st_size > 0
    from medmtl.cli.compare import _run

    assert _run([f"evals=[{tmp_path / 'a'},{tmp_path / 'b'}]", f"out={tmp_path / 'd.png'}"]) == 0
    assert (tmp_path / "d.png").stat().st_size > 0
    with pytest.raises(ConfigError, match="drop ckpt_paths="):
        _run([f"evals=[{tmp_path / 'a'}]", "ckpt_paths=[x.ckpt]"])
    (tmp_path / "a" / "masks_test.npz").unlink()
    with pytest.raises(DataError, match="save_masks=true"):
        compare_evaluations([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ConfigError, match="two evaluation folders"):
        compare_evaluations([tmp_path / "b"])


def test_compare_two_evaluations_at_different_sizes_with_one_folder_name(tmp_path):
    """Two models scored the same images at 8 and 16 px, each in a folder named ``test``:
    each mask is drawn over its own evaluation's image, and the titles tell the folders apart."""
    from medmtl.workflows.compare import compare_evaluations

    ids, label = ["img0", "img1"], np.array([1, 1])
    small = np.zeros((2, 8, 8), bool)
    small[:, 2:6, 2:6] = True
    big = np.zeros((2, 16, 16), bool)
    big[:, 4:12, 4:12] = True
    found = big.copy()
    found[1] = False  # the 16 px model misses img1
    _evaluation(tmp_path / "today" / "test", ids, small, small, label)
    _evaluation(tmp_path / "v2" / "test", ids, big, found, label)
    fig = compare_evaluations([tmp_path / "today" / "test", tmp_path / "v2" / "test"], n=2)
    titled = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert "today/test\nDice 1.000" in titled and "v2/test\nDice 0.000" in titled
    assert titled["today/test\nDice 1.000"].images[0].get_array().shape == (8, 8)
    assert titled["v2/test\nDice 0.000"].images[0].get_array().shape == (16, 16)


def test_a_lower_mask_threshold_finds_more_lesion_pixels(tiny_ckpt, tmp_path, cache_dir):
    """medmtl-eval mask_threshold=: every image's mask at 0.2 holds the mask at 0.5 (more
    pixels, never fewer), the record says which threshold ran, and a bad one is one line."""
    from medmtl.workflows.evaluate import evaluate

    def run(name: str, extra: list[str]):
        cfg = compose_cfg([f"ckpt_path={tiny_ckpt}", *extra], tmp_path / name, cache_dir, "eval")
        metrics = evaluate(cfg)
        return metrics, read_predictions(tmp_path / name / "predictions_test.csv")

    plain, at_half = run("half", ["empty_mask_class=null"])
    low, at_low = run("low", ["empty_mask_class=null", "mask_threshold=0.2"])
    assert plain["mask_threshold"] == 0.5 and low["mask_threshold"] == 0.2
    assert (at_low.pred >= at_half.pred).all() and at_low.pred.sum() > at_half.pred.sum()
    bad = compose_cfg([f"ckpt_path={tiny_ckpt}", "mask_threshold=1.2"], tmp_path / "bad",
                      cache_dir, "eval")  # fmt: skip
    with pytest.raises(ConfigError, match="mask_threshold=1.2: expected a mask probability"):
        evaluate(bad)


def test_breakdown_shows_where_the_conformal_guarantee_holds():
    """by=Device with answer sets: coverage, set size, ECE and refer rate per scanner; the
    scanner whose whole coverage CI lies below 1 - alpha is marked."""
    from medmtl.reporting.breakdown import render

    n = 40
    label = np.array([1, 2] * n)
    prob = np.tile([[0.1, 0.6, 0.3]], (2 * n, 1))
    sets = np.zeros((2 * n, 3))
    sets[:n, 1:] = 1  # scanner A: {benign, malignant}, always covered
    sets[n:, 1] = 1  # scanner B: {benign}, half its images not covered
    per = PerImage([str(i) for i in range(2 * n)], MODEL, label, prob, answer_set=sets,
                   meta={"Device": ["A"] * n + ["B"] * n})  # fmt: skip
    groups = breakdown(per, "Device", n_boot=200)
    a, b = (g.metrics for g in groups)
    assert a["conformal_coverage"] == 1.0 and b["conformal_coverage"] == 0.5
    assert a["conformal_set_size"] == 2.0 and a["refer_rate"] == 1.0 and b["refer_rate"] == 0.0
    assert "cls_ece" in a
    table = render(groups, "md", coverage=0.9)
    header, _, row_a, row_b = table.splitlines()[:4]
    for name in ("ECE", "coverage", "set size", "refer"):
        assert f" {name} |" in header
    assert "**below**" in row_b and "**below**" not in row_a
    assert "the guarantee does not hold there" in table
    assert "**below**" not in render(groups, "md")  # no nominal coverage given: no verdict

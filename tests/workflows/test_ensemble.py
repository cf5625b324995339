"""medmtl-ensemble: k runs evaluated as one model (mean of probabilities), and exported."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from medmtl.errors import MedmtlError
from medmtl.models.multitask import Gate
from medmtl.reporting.per_image import read_predictions
from medmtl.workflows.ensemble import ensemble
from medmtl.workflows.gate import MASK_THRESHOLDS
from tests.conftest import run_cli, train_tiny


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
    res = run_cli(
        "ensemble", str(tiny_run), str(second_run), f"out={out}", f"export={onnx_path}", timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["ensemble/size"] == 2 and len(m["ensemble/members"]) == 2
    assert (out / "figures" / "test_confusion_matrix.png").exists()
    ens = read_predictions(out / "predictions_test.csv")
    a, b = (read_predictions(r / "predictions_test.csv") for r in (tiny_run, second_run))
    assert np.allclose(ens.prob, (a.prob + b.prob) / 2, atol=1e-5)  # the mean of the members
    # members of one fixed split: answer sets and the refer threshold of their mask agreement
    # are both set on the shared validation images, which neither member trained on
    from medmtl.metrics import refer

    rule = json.loads((out / "refer.json").read_text())
    sets = json.loads((out / "conformal.json").read_text())
    assert rule["refer/fitted_on"] == "shared validation"
    assert rule["refer/num_images"] == len(sets["labels"]) > 0
    assert (
        ens.min_mask_agreement == rule["refer/min_mask_agreement"] == m["refer/min_mask_agreement"]
    )
    assert 0 < ens.min_mask_agreement <= 1
    want = (ens.mask_agreement < ens.min_mask_agreement) | (
        refer(ens.answer_set, ens.unlike_score) > 0
    )
    assert np.array_equal(ens.refer > 0, want)
    # the exported ensemble predicts through the ONNX backend like any model
    img = sorted((cache_dir / "phantom").rglob("*.png"))
    img = next(p for p in img if "_mask" not in p.name)
    pred_out = tmp_path / "pred"
    res = run_cli(
        "predict",
        "backend=onnx",
        f"model={onnx_path}",
        f"input={img}",
        f"out={pred_out}",
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


@pytest.fixture(scope="module")
def fold_sweep(tmp_path_factory, cache_dir) -> Path:
    """Two fold models of a 2-fold sweep with the recipe's callback (its ensemble inside)."""
    sweep = tmp_path_factory.mktemp("sweep") / "folds"
    res = _fold_sweep(
        sweep,
        cache_dir,
        "data.num_folds=2",
        "data.fold=0,1",
        "tta=true",
        "model.empty_mask_class=normal",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return sweep


@pytest.fixture(scope="module")
def tuned(fold_sweep, tmp_path_factory) -> tuple[Path, dict, Path]:
    """The sweep's ensemble with the gate tuned out of fold, exported to ONNX: its folder, its
    metrics and the ONNX file."""
    where = tmp_path_factory.mktemp("tuned")
    metrics = ensemble([fold_sweep], where / "tuned", tta=True, gate="tune",
                       export=where / "tuned.onnx")  # fmt: skip
    return where / "tuned", metrics, where / "tuned.onnx"


def test_fold_sweep_is_ensembled_when_it_ends(fold_sweep, tuned, tmp_path, cache_dir):
    """The recipe's callback: a sweep over folds ends with its ensemble tested in <sweep>/ensemble."""
    sweep = fold_sweep
    m = json.loads((sweep / "ensemble" / "metrics.json").read_text())
    assert m["ensemble/size"] == 2 and m["ensemble/folds"] == [0, 1] and m["ensemble/tta"] is True
    assert (sweep / "ensemble" / "predictions_test.csv").is_file()
    # gate=tune: the thresholds chosen on the two members' own validation folds (out of fold)
    folder, tuned, _ = tuned
    gate = json.loads((folder / "gate.json").read_text())
    assert gate["num_images"] == 10 + 15 + 15 - m["num_images"]  # every train+val image once
    assert gate["chosen"]["seg_dice"] >= gate["plain"]["seg_dice"]
    assert len(gate["candidates"]) == 49 * len(MASK_THRESHOLDS)
    assert gate["candidates"][0] == gate["plain"]
    assert tuned["empty_mask_min_prob"] == gate["empty_mask_min_prob"]
    assert tuned["empty_mask_keep_above"] == gate["empty_mask_keep_above"]
    assert tuned["mask_threshold"] == gate["mask_threshold"] == gate["chosen"]["mask_threshold"]
    assert tuned["gate/oof_seg_dice"] == pytest.approx(gate["chosen"]["seg_dice"])
    # conformal answer sets calibrated on the same out-of-fold images, kept in the folder
    sets = json.loads((folder / "conformal.json").read_text())
    assert len(sets["scores"]) == gate["num_images"] and sets["alpha"] == 0.1
    assert tuned["conformal/num_images"] == gate["num_images"]
    assert 0 <= tuned["test/conformal_coverage"] <= 1
    assert (sweep / "ensemble" / "conformal.json").is_file()  # the sweep's own ensemble too
    # the operating point for finding lesions: chosen out of fold, its cost on record
    with pytest.raises(MedmtlError, match="add gate=tune"):
        ensemble([sweep], tmp_path / "no", target_sensitivity=0.95)
    sens = ensemble([sweep], tmp_path / "sens", tta=True, gate="tune", target_sensitivity=0.95,
                    conformal_alpha=None)  # fmt: skip
    chose = json.loads((tmp_path / "sens" / "gate.json").read_text())
    assert chose["target_sensitivity"] == sens["gate/target_sensitivity"] == 0.95
    reaching = [r for r in chose["candidates"] if r["lesion_sensitivity"] >= 0.95]
    assert chose["reached"] is bool(reaching) and sens["gate/target_reached"] is bool(reaching)
    if reaching:  # the fewest false masks on normal images among them
        assert chose["chosen"] in reaching
        assert chose["chosen"]["normal_fp_rate"] == min(r["normal_fp_rate"] for r in reaching)
    else:
        best = max(r["lesion_sensitivity"] for r in chose["candidates"])
        assert chose["chosen"]["lesion_sensitivity"] == best
    assert sens["gate/oof_lesion_sensitivity"] == chose["chosen"]["lesion_sensitivity"]
    assert sens["gate/oof_normal_fp_rate"] == chose["chosen"]["normal_fp_rate"]
    assert (tmp_path / "sens" / "figures" / "gate_tradeoff.png").stat().st_size > 0
    # the tuned ensemble folder evaluates with its own gate and flip in medmtl-eval
    from medmtl.workflows.evaluate import evaluate
    from tests.conftest import compose_cfg

    again = evaluate(compose_cfg([f"ckpt_path={folder}"], tmp_path / "again", cache_dir, "eval"))
    assert again["empty_mask_min_prob"] == gate["empty_mask_min_prob"] and again["tta"] is True
    assert again["mask_threshold"] == gate["mask_threshold"]
    a, b = (read_predictions(d / "predictions_test.csv") for d in (folder, tmp_path / "again"))
    assert np.array_equal(a.pred, b.pred) and np.allclose(a.prob, b.prob, atol=1e-6)
    assert np.array_equal(a.answer_set, b.answer_set)  # medmtl-eval uses the stored sets
    # the members' disagreement per image, and their unlike scores' mean
    assert (
        a.class_disagreement is not None
        and ((a.class_disagreement >= 0) & (a.class_disagreement <= 1)).all()
    )
    assert (
        a.mask_agreement is not None and ((a.mask_agreement >= 0) & (a.mask_agreement <= 1)).all()
    )
    assert a.class_disagreement.max() > 0  # members trained on different folds do differ
    assert a.unlike_score is not None and np.isfinite(a.unlike_score).all()
    np.testing.assert_allclose(a.mask_agreement, b.mask_agreement, atol=1e-9)
    # the ensemble's own temperature and its refer threshold, both set out of fold, kept in
    # the folder and used again by medmtl-eval
    cal = json.loads((folder / "calibration.json").read_text())
    assert cal["calibration/fitted_on"] == "out-of-fold validation"
    assert tuned["calibration/temperature"] == cal["calibration/temperature"] > 0
    refer_rule = json.loads((folder / "refer.json").read_text())
    assert refer_rule["refer/num_images"] == gate["num_images"]
    assert a.min_mask_agreement == b.min_mask_agreement == refer_rule["refer/min_mask_agreement"]
    from medmtl.metrics import refer

    want = (a.mask_agreement < a.min_mask_agreement) | (refer(a.answer_set, a.unlike_score) > 0)
    assert np.array_equal(a.refer > 0, want) and np.array_equal(a.refer, b.refer)
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
    from medmtl.workflows.members import common_data

    def member(value, root):
        return {"data": {"name": "d", "root": root, key: value}, "class_names": ["x"]}

    with pytest.raises(ConfigError, match=f"other data settings .*\\({key}\\)"):
        common_data([(Path("r1"), member(a, "/data")), (Path("r2"), member(b, "/data"))])
    # where the data lies may differ: the same data set moved
    assert common_data([(Path("r1"), member(a, "/data")), (Path("r2"), member(a, "/moved"))])


def _member_mean_on(runs, data_cfg, tta: bool) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Constructed by hand: the members' softmax and sigmoid maps averaged over every image of
    ``data_cfg`` (and the mirror image when ``tta``); returns (ids, class probs, mask pixels)."""
    import torch

    from medmtl.data.build import datamodule_from_config
    from medmtl.training.module import MultiTaskModule
    from medmtl.workflows.members import best_checkpoint

    nets = [MultiTaskModule.from_checkpoint(best_checkpoint(r))[0].net for r in runs]
    dm = datamodule_from_config(data_cfg)
    dm.load()
    probs, pixels = [], []
    with torch.no_grad():
        for batch in dm.dataloader("all"):
            x = batch["image"]
            cls, seg = [], []
            for net in nets:
                net.gate = Gate(mask_threshold=net.gate.mask_threshold)
                views = [(x, False), (torch.flip(x, dims=[3]), True)] if tta else [(x, False)]
                for v, flipped in views:
                    out = net(v)
                    s = torch.sigmoid(out["seg"])
                    seg.append(torch.flip(s, dims=[3]) if flipped else s)
                    cls.append(torch.softmax(out["cls"], dim=1))
            probs.append(torch.stack(cls).mean(0))
            pixels.append((torch.stack(seg).mean(0) > 0.5).flatten(1).sum(1))
    ids = [c.case_id for c in dm.index.cases]
    return ids, torch.cat(probs).numpy(), torch.cat(pixels).numpy()


def test_an_ensemble_folder_is_evaluated_on_another_data_set(
    tiny_run, second_run, busbra, tmp_path, cache_dir
):
    """medmtl-eval ckpt_path=<ensemble folder> data=busbra: the mean of the members' maps."""
    from medmtl.workflows.evaluate import evaluate, external_data_config
    from tests.conftest import compose_cfg

    ens = tmp_path / "ens"
    ensemble([tiny_run, second_run], ens, tta=True, empty_mask_class=None)
    results = {}
    for name, model in (("folder", ens), ("sweep", None)):
        if model is None:  # a sweep folder: its runs, the ensemble inside it aside
            model = tmp_path / "sweep"
            for i, r in enumerate((tiny_run, second_run)):
                shutil.copytree(r, model / str(i))
            shutil.copytree(ens, model / "ensemble")
        cfg = compose_cfg(
            [f"ckpt_path={model}", "data=busbra", f"data.root={busbra}", "split=all"]
            + (["empty_mask_class=null"] if name == "sweep" else []),
            tmp_path / f"ext_{name}",
            cache_dir,
            config_name="eval",
        )
        results[name] = evaluate(cfg)
        per = read_predictions(tmp_path / f"ext_{name}" / "predictions_all.csv")
        assert len(per) == 24 and results[name]["ensemble/size"] == 2
        assert results[name]["tta"] is True  # the ensemble's own test-time flip, by default
    trained = json.loads((tiny_run / "metrics.json").read_text())
    data = external_data_config(
        {
            "name": "busbra",
            "source": "busbra",
            "root": str(busbra),
            "classes": ["benign", "malignant"],
            "cache_dir": str(cache_dir),
            "busbra": {"folds": 5, "test_fold": 1},
        },
        {"image_size": trained["data/image_size"]},
    )
    ids, prob, pixels = _member_mean_on([tiny_run, second_run], data, tta=True)
    per = read_predictions(tmp_path / "ext_folder" / "predictions_all.csv")
    assert per.ids == ids  # both in the data set's image order
    bm = prob[:, 1:] / prob[:, 1:].sum(1, keepdims=True)  # renormalised over benign, malignant
    assert np.allclose(per.prob, bm, atol=1e-5)
    assert np.array_equal(per.pred, pixels)
    sweep = read_predictions(tmp_path / "ext_sweep" / "predictions_all.csv")
    assert np.allclose(sweep.prob, per.prob, atol=1e-6) and np.array_equal(sweep.pred, per.pred)


def test_options_that_would_be_ignored_are_refused(tiny_run, busbra, tmp_path, cache_dir):
    """data_root= of a phantom ensemble used to score the phantom silently; an ONNX model
    given to medmtl-eval failed in torch.load. (In process: tests/cli/test_errors.py checks
    that every command turns such a refusal into one line and exit 2.)"""
    from medmtl.cli.ensemble import _run
    from medmtl.errors import ConfigError
    from medmtl.workflows.evaluate import evaluate
    from tests.conftest import compose_cfg

    with pytest.raises(ConfigError, match=r"^data\.root=.*would be ignored"):
        _run([str(tiny_run), f"out={tmp_path / 'e'}", f"data_root={busbra}", "split=all"])
    assert not (tmp_path / "e" / "metrics.json").exists()
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    cfg = compose_cfg([f"ckpt_path={tmp_path / 'm.onnx'}"], tmp_path / "ev", cache_dir, "eval")
    with pytest.raises(ConfigError, match="an exported ONNX model; this command evaluates PyTorch"):
        evaluate(cfg)


def test_a_multi_site_sweep_pools_its_data_sets_folds(tmp_path):
    """experiment=busi_busbra_cpu sweeps data.sets.busi.fold: its jobs are the folds of one
    setting (one ensemble, one table row), and each member knows its fold (out of fold)."""
    from medmtl.data.splits import fold_of
    from medmtl.reporting.runs import pooled
    from medmtl.workflows.members import shared_overrides

    jobs = []
    for k in (0, 1):
        job = tmp_path / str(k)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(
            f"- data.sets.busi.fold={k}\n- experiment=busi_busbra_cpu\n"
        )
        jobs.append(job)
    assert pooled("data.sets.busi.fold") and pooled("data.fold") and pooled("seed")
    assert not pooled("data.sets.busi.num_folds") and not pooled("loss.seg_weight")
    assert shared_overrides(jobs) == {"experiment": "busi_busbra_cpu"}
    multi = {"sets": {"busi": {"num_folds": 5, "fold": 3}, "busbra": {"num_folds": None}}}
    assert fold_of(multi) == 3 and fold_of({"num_folds": 5, "fold": 0}) == 0
    assert fold_of({"num_folds": None, "fold": 2}) is None and fold_of({"sets": {}}) is None


def test_cross_validation_folds_are_not_ensembled():
    """Each image of a protocol's folds was trained on by three of the four fold models: an
    ensemble of them has no unseen test image."""
    from medmtl.errors import ConfigError
    from medmtl.workflows.members import common_data

    hp = {"data": {"name": "busi_curated", "split": {"folds": 4}}, "class_names": ["x"]}
    with pytest.raises(ConfigError, match="folds of a cross-validation.*medmtl-tables <sweep>"):
        common_data([(Path("f0"), hp), (Path("f1"), hp)])
    assert common_data([(Path("f0"), hp)])["split"] == {"folds": 4}  # one model: its own fold


class _TorchEnsemble:
    """The PyTorch ensemble (an ensemble folder opened as medmtl-eval opens it) as a backend of
    medmtl-predict's inference code."""

    def __init__(self, folder: Path) -> None:
        from medmtl.preprocess.pipeline import PreprocessSettings
        from medmtl.workflows.members import open_model

        opened = open_model(folder)
        module = opened.module
        self.net = module.net.eval()
        self.settings = PreprocessSettings.from_dict(opened.data)
        self.class_names = list(module.class_names)
        self.task = module.task
        self.postprocess = module.postprocess
        self.answer_sets = module.answer_sets
        self.min_mask_agreement = self.net.min_mask_agreement
        self.tta = opened.tta

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            out = self.net(torch.from_numpy(batch))
        return {k: v.numpy() for k, v in out.items() if v is not None}


def test_the_exported_ensemble_answers_as_the_pytorch_ensemble_on_busi(tuned, busi, tmp_path):
    """The ensemble's ONNX carries its answer sets, temperature, gate and refer rule: on real
    BUSI images medmtl-predict with it gives the probabilities, answer sets and refer flags
    (with their reasons) of the PyTorch ensemble, and /api/model's card lists the gate."""
    from medmtl.inference.core import predict_paths
    from medmtl.inference.onnx_backend import OnnxBackend

    folder, metrics, onnx_path = tuned
    images = tmp_path / "busi"
    images.mkdir()
    for cls in ("normal", "benign", "malignant"):  # links to the real files, nothing copied
        for src in sorted((busi / cls).glob(f"{cls} (*).png"))[:4]:
            if "_mask" not in src.name:
                (images / src.name).symlink_to(src)
    assert len(list(images.iterdir())) >= 9
    # medmtl-predict flips the images as the ensemble was evaluated (its answer sets, gate and
    # temperature were fitted so) without being told; the PyTorch ensemble is told
    assert OnnxBackend(onnx_path).tta is True and metrics["ensemble/tta"] is True
    res = run_cli("predict", "backend=onnx", f"model={onnx_path}", f"input={images}",
                  f"out={tmp_path / 'onnx'}", timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    predict_paths(_TorchEnsemble(folder), images, tmp_path / "torch", tta=True, progress=False)
    rows = [
        {r["file"]: r for r in csv.DictReader((tmp_path / d / "predictions.csv").open())}
        for d in ("onnx", "torch")
    ]
    assert sorted(rows[0]) == sorted(rows[1]) and len(rows[0]) == len(list(images.iterdir()))
    probs = [c for c in next(iter(rows[0].values())) if c.startswith("prob_")]
    assert len(probs) == 3
    for name, onnx_row in rows[0].items():
        torch_row = rows[1][name]
        for c in probs:
            assert float(onnx_row[c]) == pytest.approx(float(torch_row[c]), abs=1e-4), (name, c)
        for c in ("answer_set", "refer", "refer_reasons", "predicted_class"):
            assert onnx_row[c] == torch_row[c], (name, c)
    # the ONNX knows what the folder knows
    backend = OnnxBackend(onnx_path)
    assert backend.answer_sets is not None and backend.answer_sets.alpha == 0.1
    assert backend.calibration["temperature"] == pytest.approx(metrics["calibration/temperature"])
    assert backend.min_mask_agreement == metrics["refer/min_mask_agreement"]
    gate = json.loads((folder / "gate.json").read_text())
    assert backend.card["gate"] == {
        "empty_mask_class": "normal",
        "empty_mask_min_prob": gate["empty_mask_min_prob"],
        "empty_mask_keep_above": gate["empty_mask_keep_above"],
        "mask_threshold": gate["mask_threshold"],
    }
    assert backend.card["refer"]["min_mask_agreement"] == metrics["refer/min_mask_agreement"]


def test_given_gate_thresholds_are_checked(tmp_path):
    """``gate=<thresholds>`` (an adapted ensemble keeps its source's): an unknown key is one
    line naming the known ones, before any member is opened."""
    from medmtl.errors import ConfigError
    from medmtl.workflows.ensemble import ensemble

    with pytest.raises(ConfigError, match="unknown key.*bogus.*known: empty_mask_min_prob"):
        ensemble([tmp_path / "no-such-run"], tmp_path / "out", gate={"bogus": 1})
    assert not (tmp_path / "out").exists()

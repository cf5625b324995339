"""Training and evaluation end to end on tiny data: metrics.json, resume, eval parity, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medmtl.errors import MedmtlError
from medmtl.models.checkpoint import load_checkpoint
from medmtl.training.module import MultiTaskModule
from medmtl.workflows.evaluate import evaluate
from medmtl.workflows.train import train
from tests.conftest import ROOT, TINY_MODEL, TINY_PHANTOM, run_cli

TINY = TINY_PHANTOM + TINY_MODEL + ["trainer.log_every_n_steps=1"]


def test_fast_dev_run_on_phantom(make_cfg, tmp_path):
    cfg = make_cfg(TINY + ["debug=fast_dev_run"])
    metrics = train(cfg)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "test/seg_dice" in saved and "val/overall" in saved
    assert 0.0 <= saved["test/cls_acc"] <= 1.0
    assert saved["test/seg_dice"] == pytest.approx(metrics["test/seg_dice"])
    assert (tmp_path / "run" / "config_resolved.yaml").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    """Two epochs on the tiny phantom with checkpoints (shared by the tests below)."""
    from tests.conftest import compose_cfg

    out = tmp_path_factory.mktemp("trained")
    cfg = compose_cfg(TINY + ["trainer.max_epochs=2", "seed=0"], out, cache_dir)
    metrics = train(cfg)
    return out, metrics


def test_train_writes_metrics_and_checkpoints(trained):
    out, metrics = trained
    saved = json.loads((out / "metrics.json").read_text())
    for key in (
        "cls_acc",
        "cls_f1",
        "cls_precision",
        "cls_recall",
        "cls_auc",
        "seg_iou",
        "seg_dice",
        "seg_f1",
        "overall",
        "seg_dice_lesion",
        "seg_iou_lesion",
        "normal_fp_rate",
        "cls_f1_malignant",
    ):
        assert f"test/{key}" in saved, key
    assert len(saved["test/confusion_matrix"]) == 3
    assert saved["seed"] == 0 and saved["epochs"] == 2
    # figures=false (the tests' tiny runs): the metrics and CSVs, no figures
    assert (out / "predictions_test.csv").is_file() and not (out / "figures").exists()
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert Path(saved["best_ckpt"]).exists()
    assert (out / "csv" / "metrics.csv").exists()


def test_checkpoint_loads_weights_only(trained):
    out, _ = trained
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["hyper_parameters"]["model"]["arch"] == "Unet"


def test_training_calibrates_on_validation_and_stores_the_temperature(trained, make_cfg):
    out, _ = trained
    saved = json.loads((out / "metrics.json").read_text())
    t = saved["calibration/temperature"]
    assert saved["calibration/fitted_on"] == "val" and saved["calibration/num_images"] > 0
    stored = load_checkpoint(saved["best_ckpt"])["state_dict"]["net.cls_temperature"]
    assert float(stored) == pytest.approx(t)
    assert saved["calibration/val_nll_after"] <= saved["calibration/val_nll_before"] + 1e-9
    for split in ("val", "test"):
        for name in ("nll", "brier", "ece"):
            for when in ("before", "after"):
                assert saved[f"calibration/{split}_{name}_{when}"] >= 0, (split, name, when)
    # the test split's scores are those of the calibrated model (no flip in this run)
    assert saved["test/cls_nll"] == pytest.approx(saved["calibration/test_nll_after"], rel=1e-4)
    assert saved["test/cls_brier"] == pytest.approx(saved["calibration/test_brier_after"], rel=1e-4)
    # medmtl-eval calibrated=false gives the uncalibrated model's numbers back
    cfg = make_cfg(
        [f"ckpt_path={saved['best_ckpt']}", "split=test", "calibrated=false"],
        name="eval_uncalibrated",
        config_name="eval",
    )
    again = evaluate(cfg)
    assert again["calibration/temperature"] == 1.0
    assert again["test/cls_nll"] == pytest.approx(saved["calibration/test_nll_before"], rel=1e-4)
    assert again["test/cls_acc"] == saved["test/cls_acc"]  # a temperature keeps every class


def test_training_calibrates_conformal_answer_sets(trained, make_cfg, tmp_path):
    from medmtl.models.checkpoint import CONFORMAL_KEY
    from medmtl.reporting.per_image import read_predictions

    out, _ = trained
    saved = json.loads((out / "metrics.json").read_text())
    stored = load_checkpoint(saved["best_ckpt"])[CONFORMAL_KEY]
    assert saved["conformal/alpha"] == stored["alpha"] == 0.1 and not stored["by_class"]
    assert saved["conformal/num_images"] == len(stored["scores"]) == saved["calibration/num_images"]
    per = read_predictions(out / "predictions_test.csv")
    covered = per.answer_set[range(len(per)), per.label]
    assert saved["test/conformal_coverage"] == pytest.approx(covered.mean())
    assert saved["test/conformal_set_size"] == pytest.approx(per.answer_set.sum(1).mean())
    # another error rate at evaluation time: never larger sets
    cfg = make_cfg(
        [f"ckpt_path={saved['best_ckpt']}", "split=test", "conformal.alpha=0.5"],
        name="eval_alpha",
        config_name="eval",
    )
    again = evaluate(cfg)
    assert again["conformal/alpha"] == 0.5
    assert again["test/conformal_set_size"] <= saved["test/conformal_set_size"]
    # a checkpoint without answer sets refuses the option in one line
    ckpt = torch.load(saved["best_ckpt"], weights_only=True, map_location="cpu")
    del ckpt[CONFORMAL_KEY]
    torch.save(ckpt, tmp_path / "old.ckpt")
    cfg = make_cfg(
        [f"ckpt_path={tmp_path / 'old.ckpt'}", "conformal.alpha=0.2"], name="e2", config_name="eval"
    )
    with pytest.raises(MedmtlError, match="no conformal calibration"):
        evaluate(cfg)


def test_training_fits_the_unlike_score_and_medmtl_calibrate_fits_an_old_checkpoint(
    trained, tmp_path
):
    import shutil

    from medmtl.cli.calibrate import main as calibrate_main
    from medmtl.models.checkpoint import network_from_checkpoint
    from medmtl.reporting.per_image import read_predictions

    out, _ = trained
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["unlike/quantile"] == 0.95 and saved["unlike/threshold"] > 0
    net, _ = network_from_checkpoint(saved["best_ckpt"])
    assert net.unlike.fitted
    assert float(net.unlike.threshold) == pytest.approx(saved["unlike/threshold"])
    per = read_predictions(out / "predictions_test.csv")
    assert per.unlike_score is not None and (per.unlike_score > 0).all()
    assert saved["test/unlike_rate"] == pytest.approx((per.unlike_score > 1).mean())
    assert saved["test/refer_rate"] == pytest.approx(per.refer.mean())
    # a checkpoint from before the score existed: medmtl-calibrate fits it, as training did
    old = tmp_path / "old_run"
    shutil.copytree(out, old)
    best = old / "checkpoints" / Path(saved["best_ckpt"]).name
    ckpt = torch.load(best, weights_only=True, map_location="cpu")
    for key in [k for k in ckpt["state_dict"] if k.startswith("net.unlike.")]:
        del ckpt["state_dict"][key]
    torch.save(ckpt, best)
    assert not network_from_checkpoint(best)[0].unlike.fitted
    with pytest.raises(SystemExit) as done:
        calibrate_main([str(old)])
    assert done.value.code in (0, None)
    again, _ = network_from_checkpoint(best)
    assert float(again.unlike.threshold) == pytest.approx(saved["unlike/threshold"], rel=1e-5)
    assert again.temperature == pytest.approx(saved["calibration/temperature"], rel=1e-4)
    record = json.loads((old / "calibration.json").read_text())
    assert record["ckpt_path"] == str(best) and record["unlike/num_val"] > 0
    with pytest.raises(SystemExit) as bad:
        calibrate_main([str(old), "unlike_quantile=2"])
    assert bad.value.code == 2


def test_eval_reproduces_train_time_test_metrics(trained, make_cfg, tmp_path):
    out, metrics = trained
    cfg = make_cfg(
        [f"ckpt_path={metrics['best_ckpt']}", "split=test"], name="eval", config_name="eval"
    )
    again = evaluate(cfg)
    for key, value in metrics.items():
        if key.startswith("test/") and not isinstance(value, list):
            assert again[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    assert again["test/confusion_matrix"] == metrics["test/confusion_matrix"]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())[
        "test/seg_dice"
    ] == pytest.approx(metrics["test/seg_dice"])
    # the same per-image predictions as the train-time test
    train_rows = (out / "predictions_test.csv").read_text().splitlines()
    eval_rows = (tmp_path / "eval" / "predictions_test.csv").read_text().splitlines()
    assert len(eval_rows) == len(train_rows) > 1 and eval_rows[0] == train_rows[0]
    assert [r.split(",")[0] for r in eval_rows] == [r.split(",")[0] for r in train_rows]


def test_eval_with_and_without_the_empty_mask_gate(trained, make_cfg, tmp_path):
    _, metrics = trained
    ckpt = torch.load(metrics["best_ckpt"], weights_only=True, map_location="cpu")
    ckpt["hyper_parameters"]["model"]["empty_mask_class"] = "normal"
    torch.save(ckpt, tmp_path / "gated.ckpt")

    def run(name: str, *extra: str, ckpt: Path = tmp_path / "gated.ckpt") -> dict:
        return evaluate(make_cfg([f"ckpt_path={ckpt}", *extra], name=name, config_name="eval"))

    on, off = run("gate_on"), run("gate_off", "empty_mask_class=null")
    assert on["empty_mask_class"] == "normal" and off["empty_mask_class"] is None
    # and switched on for a checkpoint trained without it
    assert run("gate_on_plain", "empty_mask_class=normal", ckpt=Path(metrics["best_ckpt"]))[
        "test/normal_fp_rate"
    ] == pytest.approx(on["test/normal_fp_rate"])
    # off: exactly the raw model's numbers; on: the classification is unchanged
    for key in ("test/seg_dice", "test/seg_dice_lesion", "test/normal_fp_rate"):
        assert off[key] == pytest.approx(metrics[key], abs=1e-6, nan_ok=True)
    assert on["test/confusion_matrix"] == metrics["test/confusion_matrix"]
    # a normal image can only get a false-positive mask if it is not classified as normal
    normal_row = on["test/confusion_matrix"][0]
    missed = (sum(normal_row) - normal_row[0]) / sum(normal_row)
    assert on["test/normal_fp_rate"] <= min(missed, off["test/normal_fp_rate"]) + 1e-9


def test_channels_last_switch_same_outputs(trained):

    module, _ = MultiTaskModule.from_checkpoint(trained[1]["best_ckpt"])
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        plain = module(x)
        module.use_channels_last(True)
        conv = next(m for m in module.net.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        fast = module(x)
    assert torch.allclose(plain["seg"], fast["seg"], atol=1e-4)
    assert torch.allclose(plain["cls"], fast["cls"], atol=1e-4)


def test_eval_other_split(trained, make_cfg):
    _, metrics = trained
    cfg = make_cfg(
        [f"ckpt_path={metrics['best_ckpt']}", "split=val"], name="evalval", config_name="eval"
    )
    res = evaluate(cfg)
    assert res["val/overall"] == pytest.approx(metrics["val/overall"], abs=1e-6)
    rows = (Path(cfg.paths.output_dir) / "predictions_val.csv").read_text().splitlines()
    assert len(rows) == res["num_images"] + 1 and rows[1].split(",")[2] == "val"


def test_resume_from_last_ckpt(trained, make_cfg):
    out, first = trained
    last = out / "checkpoints" / "last.ckpt"
    step_before = load_checkpoint(last)["global_step"]
    # last.ckpt is the last epoch, also when an earlier epoch was the best one
    assert step_before == first["global_step"]
    cfg = make_cfg(TINY + ["trainer.max_epochs=3", "seed=0", f"ckpt_path={last}"], name="resumed")
    metrics = train(cfg)
    assert metrics["epochs"] == 3
    assert metrics["global_step"] > step_before  # it continued, it did not start over
    assert metrics["global_step"] == step_before * 3 // 2


def test_same_seed_same_metrics(trained, make_cfg):
    _, first = trained
    again = train(make_cfg(TINY + ["trainer.max_epochs=2", "seed=0"], name="again"))
    for key in ("test/seg_dice", "test/cls_acc", "val/overall", "test/cls_auc"):
        assert again[key] == pytest.approx(first[key], abs=1e-6), key


def test_seg_and_cls_only_tasks(make_cfg):
    for task in ("seg", "cls"):
        metrics = train(make_cfg(TINY + ["debug=fast_dev_run", f"model.task={task}"], name=task))
        assert ("test/seg_dice" in metrics) == (task == "seg")
        assert ("test/cls_acc" in metrics) == (task == "cls")


def test_nan_loss_stops_with_clear_message(make_cfg, tmp_path):
    from medmtl.training.module import NonFiniteLossError

    cfg = make_cfg(
        TINY
        + [
            "trainer.max_epochs=1",
            "optimizer.lr=1e30",
            "trainer.gradient_clip_val=null",
            "optimizer=sgd",
            "optimizer.momentum=0.0",
            "optimizer.nesterov=false",
        ],
        name="nan",
    )
    with pytest.raises(NonFiniteLossError, match="non-finite training loss"):
        train(cfg)
    assert not (tmp_path / "nan" / "metrics.json").exists()


def test_short_real_run_on_busi_subset(busi, make_cfg, tmp_path):
    cfg = make_cfg(
        TINY_MODEL + ["data=busi", f"data.root={busi}", "data.subset=24", "trainer.max_epochs=1"],
        name="busi",
    )
    metrics = train(cfg)
    saved = json.loads((tmp_path / "busi" / "metrics.json").read_text())
    assert saved["test/seg_dice"] == pytest.approx(metrics["test/seg_dice"])
    assert sum(map(sum, saved["test/confusion_matrix"])) >= 20


def test_a_curated_fold_run_tests_on_its_fold_and_records_it(busi, make_cfg, tmp_path):
    from medmtl.reporting.per_image import read_predictions

    cfg = make_cfg(
        TINY_MODEL
        + ["data=busi_curated", f"data.root={busi}", "data.fold=3", "data.subset=24"]
        + ["trainer.max_epochs=1"],
        name="curated",
    )
    train(cfg)
    saved = json.loads((tmp_path / "curated" / "metrics.json").read_text())
    assert saved["data/cv_folds"] == 4 and saved["data/fold"] == 3
    assert saved["data/num_folds"] is None
    # the columns of the curated-BUSI comparison are in the record
    assert {"test/seg_dice_normal", "test/seg_dice_benign", "test/cls_f1_weighted"} <= set(saved)
    folds = json.loads((ROOT / "splits" / "busi_curated.json").read_text())["cases"]
    tested = read_predictions(tmp_path / "curated" / "predictions_test.csv").ids
    assert tested and {folds[i]["split"] for i in tested} == {"fold3"}


def test_config_typo_exits_nonzero_with_key_named(tmp_path):
    res = run_cli("train", "trainer.max_epoch=3", f"hydra.run.dir={tmp_path}")
    assert res.returncode != 0
    assert "max_epoch" in res.stderr and "Traceback" not in res.stderr


def test_unknown_group_option_exits_nonzero(tmp_path):
    res = run_cli("train", "model/arch=unett", f"hydra.run.dir={tmp_path}")
    assert res.returncode != 0 and "unett" in res.stderr


def test_unknown_encoder_is_one_line(tmp_path, cache_dir):
    res = run_cli(
        "train",
        *TINY,
        "model.encoder.name=resnet19",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={tmp_path}",
    )
    assert res.returncode == 2
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("medmtl: error:")]
    assert len(errors) == 1 and "resnet19" in errors[0]
    assert "Traceback" not in res.stderr


def test_bad_checkpoint_is_refused(tmp_path, make_cfg):
    """In process; tests/cli/test_errors.py checks that medmtl-eval makes it one line, exit 2."""
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MedmtlError, match="not a loadable checkpoint"):
        evaluate(make_cfg([f"ckpt_path={bad}"], name="e", config_name="eval"))
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1}}, other)
    with pytest.raises(MedmtlError, match="not from medmtl-train"):
        evaluate(make_cfg([f"ckpt_path={other}"], name="e2", config_name="eval"))


@pytest.mark.parametrize(
    "experiment,weights,folds",
    [
        # the fold model at 160 px takes a minute on 2 cores: make test-full; its offline
        # weights are checked in test_busi_cpu_with_another_lite_encoder_gets_its_weights
        pytest.param("busi_cpu", "lite2_offline", 5, marks=pytest.mark.slow),
        # 44 s, most of it caching all of BUSI at 160 px: make test-full (a real BUSI run is in
        # test_short_real_run_on_busi_subset)
        pytest.param("busi_cpu_single", "lite0_offline", None, marks=pytest.mark.slow),
    ],
)
def test_busi_cpu_experiment_fast_dev_run(experiment, weights, folds, busi, make_cfg, tmp_path):
    cfg = make_cfg([f"experiment={experiment}", f"data.root={busi}", "debug=fast_dev_run"])
    assert cfg.data.image_size == 160 and cfg.model.encoder.weights == weights
    assert cfg.data.get("num_folds") == folds
    metrics = train(cfg)
    assert "test/seg_dice" in metrics and "test/cls_acc" in metrics
    assert not (tmp_path / "run" / "checkpoints").exists()  # fast_dev_run writes no checkpoint
    if experiment == "busi_cpu":  # the recipe's evaluation: flip, gate, post-processing
        assert metrics["tta"] is True and metrics["empty_mask_class"] == "normal"


def test_eval_with_mask_postprocessing(trained, make_cfg):
    """Largest component + hole filling: never more lesions, recorded, and the same classes."""
    from medmtl.reporting.per_image import read_predictions

    out, metrics = trained
    cfg = make_cfg(
        [
            f"ckpt_path={metrics['best_ckpt']}",
            "+postprocess.largest_component=true",
            "+postprocess.fill_holes=true",
        ],
        name="eval_pp",
        config_name="eval",
    )
    res = evaluate(cfg)
    assert res["model/postprocess"] == {
        "largest_component": True,
        "fill_holes": True,
        "min_area": 0,
    }
    assert res["test/confusion_matrix"] == metrics["test/confusion_matrix"]
    assert res["test/normal_fp_rate"] <= metrics["test/normal_fp_rate"] + 1e-9
    pp = read_predictions(Path(cfg.paths.output_dir) / "predictions_test.csv")
    raw = read_predictions(out / "predictions_test.csv")
    # every image with a predicted lesion keeps one (the largest component is never empty)
    assert ((pp.pred > 0) == (raw.pred > 0)).all()


def test_eval_with_test_time_flip(trained, make_cfg):
    """tta=true averages the image and its mirror image: the mean of the two probabilities."""
    import numpy as np

    from medmtl.reporting.per_image import read_predictions

    out, metrics = trained
    cfg = make_cfg(
        [f"ckpt_path={metrics['best_ckpt']}", "tta=true"], name="tta", config_name="eval"
    )
    res = evaluate(cfg)
    assert res["tta"] is True
    module, _ = MultiTaskModule.from_checkpoint(metrics["best_ckpt"])
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        p = torch.softmax(module(x)["cls"], 1)
        pf = torch.softmax(module(torch.flip(x, dims=[3]))["cls"], 1)
        module.configure_evaluation(tta=True)
        both = torch.softmax(module(x)["cls"], 1)
    assert torch.allclose(both, (p + pf) / 2, atol=1e-5)
    tta = read_predictions(Path(cfg.paths.output_dir) / "predictions_test.csv")
    raw = read_predictions(out / "predictions_test.csv")
    assert tta.ids == raw.ids and not np.allclose(tta.prob, raw.prob)


def test_ema_of_the_weights_is_what_is_checkpointed_and_tested(make_cfg):
    """callbacks=ema: the checkpoint's state_dict is the average (loadable weights_only)."""
    from tests.conftest import TINY_MODEL, TINY_PHANTOM

    cfg = make_cfg(
        TINY_PHANTOM
        + TINY_MODEL
        + ["trainer.max_epochs=2", "callbacks=ema", "callbacks.ema.update_starting_at_epoch=0"],
        name="ema",
    )
    m = train(cfg)
    ckpt = load_checkpoint(m["best_ckpt"])  # weights_only=True inside
    assert "current_model_state" in ckpt
    avg, cur = ckpt["state_dict"], ckpt["current_model_state"]
    key = next(k for k in avg if k.endswith("cls_head.mlp.5.weight"))
    assert not torch.equal(avg[key], cur[key])  # the average differs from the last weights
    assert m["test/overall"] is not None


def test_busi_cpu_with_another_lite_encoder_gets_its_weights(make_cfg):
    from medmtl.workflows.build import net_settings

    for k in (0, 1, 2):
        cfg = make_cfg(["experiment=busi_cpu", f"model/encoder=efficientnet_lite{k}"], name=f"l{k}")
        kw = net_settings(cfg)
        assert kw.encoder == f"tu-efficientnet_lite{k}"
        assert kw.encoder_weights == f"lite{k}_offline"


def test_plain_busi_run_starts_from_offline_imagenet_weights(make_cfg):
    """`medmtl-train data=busi` with no other setting: Lite0 with its offline ImageNet weights."""
    from medmtl.workflows.build import net_settings

    kw = net_settings(make_cfg(["data=busi"]))
    assert kw.encoder == "tu-efficientnet_lite0" and kw.encoder_weights == "lite0_offline"


def test_detection_levers_train_end_to_end(make_cfg, tmp_path, monkeypatch):
    """Deep supervision, progressive resizing and class-aware sampling in one tiny training:
    the batches of the first epoch are small, the stages' loss is logged, the run records
    the settings, and the checkpoint opens for evaluation (the heads' weights included)."""
    import csv

    import medmtl.training.module as module_mod

    sizes: list[int] = []
    real = module_mod.resized_batch

    def spy(image, mask, size):
        sizes.append(size)
        return real(image, mask, size)

    monkeypatch.setattr(module_mod, "resized_batch", spy)
    cfg = make_cfg(
        TINY
        + [
            "trainer.max_epochs=2",
            "model.deep_supervision=true",
            "data.progressive_resize.start_size=32",
            "data.progressive_resize.fraction=0.5",
            "data.class_sampling={malignant: 2}",
        ]
    )
    train(cfg)
    half = len(sizes) // 2
    assert half > 0 and sizes == [32] * half + [64] * half
    run = tmp_path / "run"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["model/deep_supervision"] is True
    assert saved["data/progressive_resize"] == {"start_size": 32, "fraction": 0.5}
    with open(next(run.glob("csv/**/metrics.csv"))) as f:
        logged = [r["train/loss_deep"] for r in csv.DictReader(f) if r.get("train/loss_deep")]
    assert logged and all(float(v) > 0 for v in logged)
    module, _ = MultiTaskModule.from_checkpoint(next((run / "checkpoints").glob("epoch*.ckpt")))
    assert module.net.deep_supervision is not None


def test_a_fine_tuning_starts_from_a_models_weights(make_cfg, tmp_path, tiny_run, tiny_ckpt):
    """init_from=<run>: the new run starts from the model's learned weights (at a learning
    rate too small to move them, they are still the model's after an epoch), records where it
    started, and fits its own temperature and references; a model it cannot start from is
    refused, naming init_from, before anything is written."""
    from medmtl.errors import ConfigError

    still = ["trainer.max_epochs=1", "optimizer.lr=1e-12", "optimizer.weight_decay=0"]
    train(make_cfg(TINY + still + [f"init_from={tiny_run}"], name="tuned"))
    source = load_checkpoint(tiny_ckpt)["state_dict"]
    tuned_run = tmp_path / "tuned"
    tuned = load_checkpoint(next((tuned_run / "checkpoints").glob("epoch*.ckpt")))["state_dict"]
    conv = [k for k, v in source.items() if k.endswith("weight") and v.ndim == 4]
    assert len(conv) > 10
    for k in conv:
        torch.testing.assert_close(tuned[k], source[k], rtol=0, atol=1e-6)
    saved = json.loads((tuned_run / "metrics.json").read_text())
    assert saved["init_from"] == str(tiny_run) and saved["shift/num_reference"] >= 2
    train(make_cfg(TINY + still, name="fresh"))  # the same run without init_from: other weights
    fresh = load_checkpoint(next((tmp_path / "fresh" / "checkpoints").glob("epoch*.ckpt")))
    assert not torch.allclose(fresh["state_dict"][conv[0]], source[conv[0]])
    refusals = {
        "data.image_size=96": "init_from=.*image_size differ",
        "model/encoder=resnet18": "init_from=.*another network than this run's",
    }
    for override, says in refusals.items():
        with pytest.raises(ConfigError, match=says):
            train(make_cfg(TINY + still + [override, f"init_from={tiny_run}"], name="bad"))
        assert not (tmp_path / "bad" / "checkpoints").exists()
    # an ensemble (a sweep folder of two runs) is not one network to start from
    import shutil

    for k in range(2):
        shutil.copytree(tiny_run, tmp_path / "sweep" / str(k))
    with pytest.raises(ConfigError, match="init_from=.*an ensemble; a fine-tuning starts from"):
        train(make_cfg(TINY + still + [f"init_from={tmp_path / 'sweep'}"], name="bad"))
    assert not (tmp_path / "bad" / "checkpoints").exists()
    # the phantom always has the three classes: a model of two is refused by the same check
    from medmtl.workflows.members import check_classes, open_model

    with pytest.raises(ConfigError, match=r"init_from=x: its classes \['normal', 'benign', "):
        check_classes(open_model(tiny_ckpt), ["benign", "malignant"], "init_from=x")


def test_distillation_trains_a_student_on_a_teacher_run(make_cfg, tmp_path, tiny_run):
    """distill.teacher=<run>: the student's loss includes the distillation term, the run
    records its teacher, and the checkpoint holds the student alone."""
    import csv

    from medmtl.errors import ConfigError

    cfg = make_cfg(TINY + ["trainer.max_epochs=1", f"distill.teacher={tiny_run}"])
    train(cfg)
    run = tmp_path / "run"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["distill/teacher"] == str(tiny_run) and saved["distill/weight"] == 0.5
    with open(next(run.glob("csv/**/metrics.csv"))) as f:
        logged = [r["train/loss_distill"] for r in csv.DictReader(f) if r.get("train/loss_distill")]
    assert logged and all(float(v) > 0 for v in logged)
    student = load_checkpoint(next((run / "checkpoints").glob("epoch*.ckpt")))["state_dict"]
    teacher = load_checkpoint(next((tiny_run / "checkpoints").glob("epoch*.ckpt")))["state_dict"]
    assert student.keys() == teacher.keys()  # the same network, no teacher weights inside
    # a teacher that reads images otherwise is refused before anything is written
    other = make_cfg(TINY + ["data.image_size=96", f"distill.teacher={tiny_run}"], name="bad")
    with pytest.raises(ConfigError, match="image_size differ"):
        train(other)
    assert not (tmp_path / "bad").exists()


def test_lightnings_own_sigterm_stop_is_a_stop_not_a_finished_run(make_cfg, tmp_path, monkeypatch):
    """Lightning ends fit with SIGTERMException (a SystemExit of status 0) when it saw SIGTERM
    first: the run stops as by medmtl's handler, keeping its checkpoint, status 128 + 15."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from medmtl.errors import Stopped

    def flagged(self):  # what Lightning's loop raises once its SIGTERM flag is set
        if self.current_epoch >= 1:  # after an epoch whose checkpoint is kept
            raise SIGTERMException

    monkeypatch.setattr(MultiTaskModule, "on_train_epoch_end", flagged, raising=False)
    cfg = make_cfg(TINY + ["trainer.max_epochs=3"], name="term")
    with pytest.raises(Stopped) as stop:
        train(cfg)
    last = tmp_path / "term" / "checkpoints" / "last.ckpt"
    assert stop.value.status == 143
    assert str(stop.value) == (
        f"stopped by SIGTERM; the epochs finished before it are kept; resume with ckpt_path={last}"
    )
    assert not (tmp_path / "term" / "metrics.json").exists()

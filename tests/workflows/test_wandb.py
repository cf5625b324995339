"""W&B runs read back offline with W&B's own reader (``wandb leet inspect --json``, no network):
masks as segmentation media, the per-image table, names and groups, the config with the code
version and the split hash, the model artifact, eval / ensemble / tables runs, and W&B off
changing nothing else."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medmtl.errors import ConfigError
from medmtl.workflows.train import train
from tests.conftest import TINY_MODEL, TINY_PHANTOM, compose_cfg, run_cli

WANDB = Path(sys.executable).with_name("wandb")
TINY = TINY_PHANTOM + TINY_MODEL + ["trainer.max_epochs=2", "seed=1", "trainer.deterministic=true",
                                   "figures=true"]  # fmt: skip


def _offline(mp: pytest.MonkeyPatch, where: Path) -> None:
    """W&B offline, quiet, and everything it keeps (staging, cache, settings) in ``where``."""
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        mp.setenv(var, str(where / var.lower()))


@pytest.fixture(autouse=True)
def offline_wandb(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)


def records(folder: Path) -> list[dict]:
    """Every record of the one offline W&B run under ``folder``, as W&B's reader gives them."""
    runs = sorted(folder.glob("wandb/offline-run-*"))
    assert len(runs) == 1, runs
    res = subprocess.run(
        [str(WANDB), "leet", "inspect", str(runs[0]), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    out = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    assert out and out[-1]["type"] == "exit" and out[-1]["exit"].get("exit_code", 0) == 0
    return out


def of_type(recs: list[dict], kind: str) -> list[dict]:
    return [r[kind] for r in recs if r["type"] == kind]


def config(recs: list[dict]) -> dict:
    merged: dict = {}
    for rec in [*(r["config"] for r in of_type(recs, "run")), *of_type(recs, "config")]:
        merged.update(rec.get("update", {}))
    return merged


def history_with(recs: list[dict], key: str) -> list[dict]:
    return [h["item"] for h in of_type(recs, "history") if f"{key}._type" in h["item"]]


def staged_table(recs: list[dict], key: str) -> dict:
    """The full table JSON (with its images and masks) of the run_table artifact of ``key``."""
    name = key.replace("/", "") if "/" in key else key
    for art in of_type(recs, "artifact"):
        if art["type"] == "run_table" and name in art["name"].replace("-", ""):
            entry = next(
                c for c in art["manifest"]["contents"] if c["path"].endswith(".table.json")
            )
            return json.loads(Path(entry["local_path"]).read_text())
    raise AssertionError(f"no run_table artifact for {key}")


def csv_rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def wb_run(tmp_path_factory, cache_dir) -> Path:
    """A tiny 2-epoch run logged to W&B offline, with its model (and ONNX) as an artifact."""
    out = tmp_path_factory.mktemp("wb") / "run"
    with pytest.MonkeyPatch.context() as mp:
        _offline(mp, out.parent)
        overrides = TINY + [
            "logger=wandb",
            "logger.wandb.media.n_images=3",
            "logger.wandb.log_model=true",
            "logger.wandb.log_onnx=true",
            "model.empty_mask_class=null",
        ]
        train(compose_cfg(overrides, out, cache_dir))
    return out


def test_training_run_names_groups_and_records_its_code_and_split(wb_run):
    recs = records(wb_run)
    run = of_type(recs, "run")[0]
    metrics = json.loads((wb_run / "metrics.json").read_text())
    assert run["display_name"] == "unet-lite0-λ0.7-seed1" == metrics["wandb/name"]
    assert run["job_type"] == "train" and run["run_group"] == "train" == metrics["wandb/group"]
    assert run["run_id"] == metrics["wandb/run_id"]
    cfg = config(recs)
    assert cfg["data.image_size"] == 64 and cfg["loss.seg_weight"] == 0.7  # flat keys
    assert cfg["logger.wandb.media.n_images"] == 3
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", cfg["code/git_commit"])
    split = Path(cfg["data/split_file/phantom"])
    assert cfg["data/split_sha256/phantom"] == hashlib.sha256(split.read_bytes()).hexdigest()
    tags = run.get("tags") or []
    assert "arch=Unet" in tags and "lambda=0.7" in tags


def test_the_same_validation_images_with_both_masks_every_epoch(wb_run):
    recs = records(wb_run)
    epochs = history_with(recs, "val/masks")
    assert len(epochs) == 2  # one per epoch, none from the sanity check
    captions = [e["val/masks.captions"] for e in epochs]
    assert (
        len(captions[0]) == 3 and captions[0][0].split(" · ")[0] == captions[1][0].split(" · ")[0]
    )
    assert [c.split(" · ")[0] for c in captions[0]] == [c.split(" · ")[0] for c in captions[1]]
    for e in epochs:
        assert e["val/masks._type"] == "images/separated" and e["val/masks.count"] == 3
        for masks in e["val/masks.all_masks"]:
            assert set(masks) == {"prediction", "ground_truth"}
            assert masks["prediction"]["_type"] == "mask"
    run_files = next(wb_run.glob("wandb/offline-run-*")) / "files"
    assert (run_files / epochs[0]["val/masks.all_masks"][0]["prediction"]["path"]).is_file()
    labels = config(recs)["_wandb"]["mask/class_labels"]
    assert any(v["value"] == {"0": "background", "1": "lesion"} for v in labels.values())


def test_the_test_table_has_one_row_per_image_with_its_dice(wb_run):
    recs = records(wb_run)
    rows = csv_rows(wb_run / "predictions_test.csv")
    table = staged_table(recs, "test/predictions")
    assert table["columns"][:3] == ["image", "id", "dataset"]
    assert len(rows) >= 5 and len(table["data"]) == len(rows)
    col = {c: i for i, c in enumerate(table["columns"])}
    for row, csv_row in zip(table["data"], rows, strict=True):
        assert row[col["id"]] == csv_row["id"]
        assert row[col["dice"]] == pytest.approx(float(csv_row["dice"]))
        assert row[col["gt_pixels"]] == int(csv_row["gt_pixels"])
        assert set(row[col["image"]]["masks"]) == {"prediction", "ground_truth"}
    assert "pred_class" in col and "prob_malignant" in col
    summary = history_with(recs, "test/masks")
    assert summary and summary[-1]["test/masks.count"] == 3
    figures = [
        h for h in of_type(recs, "history") if "figures/test_confusion_matrix._type" in h["item"]
    ]
    assert figures


def test_the_model_artifact_is_a_model_folder(wb_run, tmp_path):
    recs = records(wb_run)
    arts = [a for a in of_type(recs, "artifact") if a["type"] == "model"]
    assert len(arts) == 1
    art = arts[0]
    metrics = json.loads((wb_run / "metrics.json").read_text())
    meta = json.loads(art["metadata"])
    assert meta["test/seg_dice"] == pytest.approx(metrics["test/seg_dice"])
    assert any(k.startswith("data/split_sha256/") for k in meta)
    assert set(art["aliases"]) >= {"best", "latest"} and art["name"].startswith("model-")
    files = {c["path"]: Path(c["local_path"]) for c in art["manifest"]["contents"]}
    assert {"model.ckpt", "model.onnx", "metrics.json", "splits/phantom.json"} <= set(files)
    # the artifact as `wandb artifact get` lays it out: a folder medmtl-predict runs
    folder = tmp_path / "artifact"
    for rel, src in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / rel)
    image = _one_image(tmp_path)
    for name, drop in (("onnx", None), ("ckpt", "model.onnx")):
        if drop:
            (folder / drop).unlink()
        res = run_cli(
            "predict", f"model={folder}", f"input={image}", f"out={tmp_path / name}", timeout=300
        )
        assert res.returncode == 0, res.stderr[-2000:]
        assert len(csv_rows(tmp_path / name / "predictions.csv")) == 1


def _one_image(tmp_path: Path) -> Path:
    import numpy as np
    from PIL import Image

    path = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 96), dtype=np.uint8)).save(path)
    return path


def test_eval_and_ensemble_runs_join_the_models_group(wb_run, make_cfg, tmp_path):
    from medmtl.workflows.ensemble import ensemble
    from medmtl.workflows.evaluate import evaluate

    metrics = evaluate(
        make_cfg([f"ckpt_path={wb_run}", "logger=wandb"], name="eval", config_name="eval")
    )
    recs = records(tmp_path / "eval")
    run = of_type(recs, "run")[0]
    assert run["job_type"] == "eval" and run["run_group"] == "train"
    assert run["display_name"] == "unet-lite0-λ0.7-seed1-eval-phantom-test" == metrics["wandb/name"]
    rows = csv_rows(tmp_path / "eval" / "predictions_test.csv")
    assert len(staged_table(recs, "test/predictions")["data"]) == len(rows)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["wandb/group"] == "train"
    ens = ensemble([wb_run], tmp_path / "ens", wandb={
        "project": "medmtl", "online": False, "group": None, "name": None, "tags": [],
        "n_images": 2})  # fmt: skip
    recs = records(tmp_path / "ens")
    run = of_type(recs, "run")[0]
    assert run["job_type"] == "ensemble" and run["run_group"] == "train"
    assert ens["wandb/group"] == "train"
    assert history_with(recs, "test/masks")[-1]["test/masks.count"] == 2


def test_a_bad_media_setting_is_refused_before_any_work(make_cfg, tmp_path):
    for bad in ("-1", "two", "1.5"):
        cfg = make_cfg(TINY + ["logger=wandb", f"logger.wandb.media.n_images={bad}"], name=bad)
        with pytest.raises(ConfigError, match="logger.wandb.media.n_images"):
            train(cfg)
        assert not (tmp_path / bad / "metrics.json").exists()
    cfg = make_cfg(TINY + ["logger=wandb", "logger.wandb.log_onnx=true"], name="onnx")
    with pytest.raises(ConfigError, match="log_model=true"):
        train(cfg)


def test_wandb_off_or_offline_changes_nothing_else(make_cfg, tmp_path, monkeypatch):
    """The media callback draws no random number and touches no metric: the same run with W&B
    offline (media on), W&B disabled and no W&B gives the same numbers; disabled writes no
    W&B files."""
    keep = ("test/cls_acc", "test/seg_dice", "test/cls_auc", "val/overall", "global_step")
    plain = train(make_cfg(TINY, name="plain"))
    logged = train(make_cfg(TINY + ["logger=wandb"], name="offline"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    off = train(make_cfg(TINY + ["logger=wandb"], name="disabled"))
    for k in keep:
        assert plain[k] == logged[k] == off[k], k
    assert list((tmp_path / "offline").glob("wandb/offline-run-*"))
    assert not list((tmp_path / "disabled").glob("wandb/*-run-*"))
    assert not any(k.startswith("wandb/") for k in plain)


def test_a_sweep_its_ensemble_and_its_table_share_one_group(tmp_path, cache_dir):
    from tests.reporting.test_sweeps_tables import _train_multirun
    from tests.workflows.test_ensemble import ENSEMBLE_CALLBACK

    sweep = tmp_path / "multirun" / "folds"
    res = _train_multirun(sweep, cache_dir, ENSEMBLE_CALLBACK, "data.num_folds=2", "data.fold=0,1",
                          "logger=wandb", "logger.wandb.media.n_images=2")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    group = str(sweep.resolve())[-128:]
    names = []
    for job in ("0", "1"):
        run = of_type(records(sweep / job), "run")[0]
        assert run["job_type"] == "train" and run["run_group"] == group
        names.append(run["display_name"])
    assert names == ["unet-lite0-λ0.7-fold0", "unet-lite0-λ0.7-fold1"]
    run = of_type(records(sweep / "ensemble"), "run")[0]
    assert run["job_type"] == "ensemble" and run["run_group"] == group
    assert run["display_name"] == "folds-ensemble"
    res = run_cli("tables", str(sweep), "--wandb", timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    recs = records(sweep / "tables")
    run = of_type(recs, "run")[0]
    assert run["job_type"] == "tables" and run["run_group"] == group
    table = next(
        t for t in of_type(recs, "history") if any(k.startswith("tables/") for k in t["item"])
    )
    key = next(k for k in table["item"] if k.startswith("tables/") and k.endswith("._type"))
    assert table["item"][key] == "table-file"
    rows = csv_rows(next((sweep / "tables").glob("*.csv")))
    assert table["item"][key.replace("._type", ".nrows")] == len(rows) >= 2


def test_names_groups_and_flat_config_from_settings(tmp_path):
    from medmtl.settings.model import NetSettings
    from medmtl.workflows.wandb_runs import flat_config, run_name, split_own_settings, sweep_group

    lite2 = NetSettings(arch="Unet", encoder="tu-efficientnet_lite2")
    assert run_name(lite2, 0.7, fold=3) == "unet-lite2-λ0.7-fold3"
    seg = NetSettings(arch="FPN", encoder="tu-wide_resnet50_2", task="seg")
    assert run_name(seg, 0.7, seed=2) == "fpn-wide_resnet50_2-seg-seed2"
    root = tmp_path / "out"
    assert sweep_group(root / "multirun" / "lam" / "x", root) == "multirun/lam/x"
    assert sweep_group(tmp_path / "elsewhere", root) == str((tmp_path / "elsewhere").resolve())
    assert len(sweep_group(tmp_path / ("d" * 300))) == 128
    assert flat_config({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {
        "a.b": 1, "a.c.d": [1, 2], "e": {}}  # fmt: skip
    lightning, own = split_own_settings({"project": "p", "media": {"n_images": 0},
                                         "log_model": True})  # fmt: skip
    assert lightning == {"project": "p", "log_model": False, "offline": False, "mode": "offline"}
    assert own == {"n_images": 0, "log_model": True, "log_onnx": False}
    with pytest.raises(ConfigError, match="log_model"):
        split_own_settings({"log_model": "yes"})


def test_bad_wandb_options_and_a_folder_without_a_model_are_refused(tmp_path, monkeypatch):
    from medmtl.workflows import wandb_runs
    from medmtl.workflows.wandb_runs import option_request

    assert option_request("none", "wandb") is None
    asked = []  # online: W&B's server and login are checked (test_absent_services.py)
    monkeypatch.setenv("WANDB_MODE", "offline")  # not the tests' "disabled", which skips it
    monkeypatch.setattr(wandb_runs, "check_online", asked.append)
    assert option_request("online", "wandb")["online"] is True
    assert asked == ["wandb=online"]
    with pytest.raises(ConfigError, match="wandb=sometimes: choose none, offline or online"):
        option_request("sometimes", "wandb")
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    res = run_cli(
        "predict",
        f"model={empty}",
        f"input={_one_image(tmp_path)}",
        f"out={tmp_path / 'out'}",
        timeout=300,
    )
    assert res.returncode != 0
    assert f"model={empty}: a folder without model.onnx or model.ckpt" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "predictions.csv").exists()

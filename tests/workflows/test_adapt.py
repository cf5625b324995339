"""medmtl-adapt on a constructed new site: the phantom imaged by a "scanner" that inverts its
grey levels (dark lesions become bright). A tiny model of the phantom fails there; adapted
with 36 of the site's cases it segments the site's other cases better, keeps the phantom's own
test split within tolerance, and its answer sets are calibrated on the site."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from medmtl.cli.adapt import _run as adapt_cli
from medmtl.cli.adapt import main as adapt_main
from medmtl.data.phantom import ensure_phantom
from medmtl.workflows.logs import logs_on_success
from tests.conftest import TINY_MODEL, compose_cfg, refused, shared_once

COUNTS = {"normal": 16, "benign": 20, "malignant": 20}
# the source model: the phantom's 80 images at 64 px, from the offline ImageNet weights
SOURCE = [
    "data.phantom.counts.normal=20",
    "data.phantom.counts.benign=30",
    "data.phantom.counts.malignant=30",
    "data.phantom.size=96",
    "model.encoder.weights=lite0_offline",
    "optimizer.lr=2e-3",
    "trainer.max_epochs=8",
]


def _site(
    root: Path, cache: Path, seed: int, per_class: int | None = None, classes=tuple(COUNTS)
) -> Path:
    """The phantom of ``seed`` with inverted grey levels, as a manifest (one patient per
    image); ``per_class``: only that many images of each of ``classes``."""
    source = ensure_phantom(cache, seed, COUNTS, 96)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for cls in classes:
        images = sorted(p for p in (source / cls).glob("*.png") if not p.stem.endswith("_mask"))
        for image in images[:per_class]:
            grey = np.asarray(Image.open(image).convert("L"))
            Image.fromarray(255 - grey).save(root / image.name)
            mask = image.with_name(image.stem + "_mask.png")
            rows.append({"image": image.name, "mask": "", "label": cls, "group": image.stem})
            if mask.exists():
                Image.open(mask).save(root / mask.name)
                rows[-1]["mask"] = mask.name
    manifest = root / "cases.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "mask", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, cache_dir) -> Path:
    """A tiny model of the phantom, trained a few epochs (good enough to lose on the site)."""
    from medmtl.workflows.train import train

    def make(out: Path) -> None:
        overrides = TINY_MODEL + SOURCE + ["seed=0", "figures=false"]
        train(compose_cfg(overrides, out, cache_dir))

    return shared_once(tmp_path_factory, "adapt_source", make)


def _evaluate(model: Path, manifest: Path | None, cache: Path, out: Path) -> dict:
    from medmtl.workflows.evaluate import evaluate

    data = [] if manifest is None else [
        "data=manifest", f"data.manifest={manifest}", f"data.split_file={out}.split.json",
        "split=all",
    ]  # fmt: skip
    cfg = compose_cfg([f"ckpt_path={model}", "figures=false", *data], out, cache, "eval")
    return evaluate(cfg)


@pytest.mark.slow
def test_adapting_to_a_new_site_helps_there_and_keeps_the_source(
    source_run, tmp_path, cache_dir, capsys
):
    site = _site(tmp_path / "site", cache_dir, seed=5)
    unseen = _site(tmp_path / "site_test", cache_dir, seed=6, per_class=8)
    out = tmp_path / "adapted"
    files = {p: p.stat().st_mtime_ns for p in source_run.rglob("*")}
    assert (
        adapt_cli([f"model={source_run}", f"site={site}", f"out={out}", "epochs=4", "lr=1e-3"]) == 0
    )
    assert {p: p.stat().st_mtime_ns for p in source_run.rglob("*")} == files  # only read
    printed = capsys.readouterr().out
    record = json.loads((out / "adapt.json").read_text())
    assert f"adapted 1 member(s) with {len(record['site']['learned_from'])} site case(s)" in printed
    n_learn, n_held = len(record["site"]["learned_from"]), len(record["site"]["held_back"])
    assert n_learn + n_held == sum(COUNTS.values()) and n_held >= 9
    assert not set(record["site"]["learned_from"]) & set(record["site"]["held_back"])
    member = record["members"][0]
    assert member["from"] == str(source_run) and len(member["from_sha256"]) == 64
    assert member["calibration/fitted_on"] == "validation of site"
    assert member["calibration/num_images"] == n_held
    assert (out / "model.onnx").is_file() and record["export"] == str(out / "model.onnx")
    tuned = json.loads((Path(member["run"]) / "metrics.json").read_text())
    assert tuned["init_from"] == str(source_run)
    before = _evaluate(source_run, unseen, cache_dir, tmp_path / "before")
    after = _evaluate(Path(member["run"]), unseen, cache_dir, tmp_path / "after")
    gain = after["all/seg_dice_lesion"] - before["all/seg_dice_lesion"]
    assert gain > 0.05, (before["all/seg_dice_lesion"], after["all/seg_dice_lesion"])
    source_before = _evaluate(source_run, None, cache_dir, tmp_path / "src_before")
    source_after = _evaluate(Path(member["run"]), None, cache_dir, tmp_path / "src_after")
    kept = (source_before["test/seg_dice_lesion"], source_after["test/seg_dice_lesion"])
    assert kept[1] >= kept[0] - 0.1, kept
    print(
        f"site lesion Dice {before['all/seg_dice_lesion']:.4f} -> "
        f"{after['all/seg_dice_lesion']:.4f}; source test {kept[0]:.4f} -> {kept[1]:.4f}"
    )


def test_an_ensemble_is_adapted_member_by_member_and_calibrated_on_the_site(
    tiny_run, tmp_path, cache_dir, capsys
):
    """Two members (a sweep folder): each fine-tuned in its own folder from its own weights,
    the ensemble of the adapted members with its temperature and answer sets fitted on the
    site's held-back cases, and the ONNX export carrying those answer sets."""
    import shutil

    from medmtl.inference.onnx_backend import OnnxBackend
    from medmtl.workflows.ensemble import ensemble

    sweep = tmp_path / "sweep"
    for k in range(2):
        shutil.copytree(tiny_run, sweep / str(k))
    # the source ensemble, evaluated with the flip and a gate of its own
    gate = {"empty_mask_min_prob": 0.7, "empty_mask_keep_above": None, "mask_threshold": 0.3}
    ensemble([sweep], sweep / "ensemble", tta=True, gate=gate)
    # like a breast clinic's scanner: no normal image among the cases
    site = _site(
        tmp_path / "site", cache_dir, seed=5, per_class=18, classes=("benign", "malignant")
    )
    out = tmp_path / "adapted"
    files = {p: p.stat().st_mtime_ns for p in sweep.rglob("*")}
    assert adapt_cli([f"model={sweep / 'ensemble'}", f"site={site}", f"out={out}", "epochs=1"]) == 0
    assert {p: p.stat().st_mtime_ns for p in sweep.rglob("*")} == files  # read, not written
    assert "adapted 2 member(s)" in capsys.readouterr().out
    record = json.loads((out / "adapt.json").read_text())
    assert [m["from"] for m in record["members"]] == [str(sweep / "0"), str(sweep / "1")]
    assert record["model"] == str(out / "ensemble") and (out / "0" / "metrics.json").is_file()
    held, learned = len(record["site"]["held_back"]), len(record["site"]["learned_from"])
    assert held + learned == 36
    # an epoch draws each site case about once: learned / site_share draws, batches of 8
    tuned = OmegaConf.load(out / "0" / "config_resolved.yaml")
    assert tuned.trainer.limit_train_batches == math.ceil(learned / 0.5 / 8)
    assert tuned.data.set_sampling == {"site": 0.5} and tuned.init_from == str(sweep / "0")
    assert str(tiny_run) not in (out / "0" / "config_resolved.yaml").read_text()
    # the adapted ensemble is evaluated at its source's operating point: flip and gate
    adapted = json.loads((out / "ensemble" / "metrics.json").read_text())
    assert adapted["ensemble/tta"] is True and adapted["mask_threshold"] == 0.3
    assert adapted["empty_mask_min_prob"] == 0.7 and record["ensemble"]["gate"] == gate
    calibration = json.loads((out / "ensemble" / "calibration.json").read_text())
    assert calibration["calibration/fitted_on"] == "validation of site"
    assert calibration["calibration/num_images"] == held
    sets = json.loads((out / "ensemble" / "conformal.json").read_text())
    onnx = OnnxBackend(out / "model.onnx")
    assert onnx.answer_sets.to_dict() == sets and len(onnx.shift_references) == 2
    assert json.loads((out / "0" / "site_calibration.json").read_text())[
        "calibration/num_images"
    ] == held  # fmt: skip


def test_a_site_with_fewer_classes_is_calibrated_in_the_model_s_labels(
    tiny_run, tmp_path, cache_dir
):
    """The ensemble's temperature and answer sets are fitted on the site's held-back cases
    labelled as the model's classes: a benign case of a benign/malignant site is the model's
    benign, not its first class (normal)."""
    from medmtl.data.build import datamodule_from_config
    from medmtl.workflows.ensemble import _shared_validation
    from medmtl.workflows.members import build_ensemble

    manifest = _site(
        tmp_path / "site", cache_dir, seed=5, per_class=6, classes=("benign", "malignant")
    )
    head, data, _ = build_ensemble([tiny_run, tiny_run])
    site = {k: data[k] for k in ("image_size", "cache_dir") if k in data}
    site.update(source="manifest", name="site", manifest=str(manifest),
                classes=["benign", "malignant"], split_file=str(tmp_path / "split.json"),
                split={"seed": 0, "val_fraction": 0.5, "test_fraction": 0.0})  # fmt: skip
    part = _shared_validation(head, site)
    dm = datamodule_from_config(site)
    dm.setup()
    names = list(head.class_names)
    truth = [names.index(c.class_name) for c in dm.cases("val")]
    assert names[0] == "normal" and len(truth) >= 5
    assert part["label"].tolist() == truth and set(truth) == {1, 2}


def test_too_few_cases_and_foreign_classes_are_refused(
    tiny_run, tmp_path, cache_dir, capsys, caplog
):
    few = _site(tmp_path / "few", cache_dir, seed=5, per_class=4)
    caplog.set_level(logging.INFO)
    says = refused(lambda: adapt_main([f"model={tiny_run}", f"site={few}",
                                       f"out={tmp_path / 'a'}"]), capsys)  # fmt: skip
    assert "label more cases" in says and "to calibrate at alpha 0.1" in says
    assert not (tmp_path / "a").exists()  # nothing left behind
    # the site's split file was written and removed: no advice to keep it
    assert "Wrote the split file" not in caplog.text
    foreign = _site(tmp_path / "foreign", cache_dir, seed=5, per_class=12)
    text = foreign.read_text().replace(",malignant,", ",cancer,")
    foreign.write_text(text)
    says = refused(lambda: adapt_main([f"model={tiny_run}", f"site={foreign}",
                                       f"out={tmp_path / 'b'}"]), capsys)  # fmt: skip
    assert "label 'cancer' is not one of the classes" in says
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "old.txt").write_text("x")
    says = refused(lambda: adapt_main([f"model={tiny_run}", f"site={foreign}",
                                       f"out={tmp_path / 'c'}"]), capsys)  # fmt: skip
    assert "not empty" in says


def test_the_data_module_s_logs_come_only_after_the_site_is_accepted(caplog):
    caplog.set_level(logging.INFO)
    logger = logging.getLogger("medmtl.data.datamodule")
    with logs_on_success("medmtl.data.datamodule"):
        logger.warning("Wrote the split file x.json")
        assert "x.json" not in caplog.text
    assert "Wrote the split file x.json" in caplog.text
    caplog.clear()
    with pytest.raises(ValueError), logs_on_success("medmtl.data.datamodule"):
        logger.warning("Wrote the split file y.json")
        raise ValueError("refused")
    logger.warning("later")
    assert "y.json" not in caplog.text and "later" in caplog.text


def test_keep_last_keeps_the_end_of_the_schedule(tiny_run, tmp_path, cache_dir, capsys):
    """keep=last: each member keeps its last epoch whatever its validation score (the
    held-back cases then only calibrate), without early stopping; a third word is refused."""
    site = _site(tmp_path / "site", cache_dir, seed=5, per_class=12)
    out = tmp_path / "last"
    assert adapt_cli([f"model={tiny_run}", f"site={site}", f"out={out}", "epochs=3",
                      "keep=last", "export=false"]) == 0  # fmt: skip
    tuned = OmegaConf.load(out / tiny_run.name / "config_resolved.yaml")
    assert tuned.callbacks.model_checkpoint.monitor == "step"
    assert "early_stopping" not in tuned.callbacks
    record = json.loads((out / "adapt.json").read_text())
    kept = Path(record["members"][0]["checkpoint"]).name
    assert kept.startswith("epoch002-") and record["settings"]["keep"] == "last"
    source = OmegaConf.load(tiny_run / "config_resolved.yaml")
    assert source.callbacks.model_checkpoint.monitor == "val/overall"  # best: as trained
    says = refused(lambda: adapt_main([f"model={tiny_run}", f"site={site}",
                                       f"out={tmp_path / 'x'}", "keep=first"]), capsys)  # fmt: skip
    assert "keep='first' is unknown; choose one of last, best" in says

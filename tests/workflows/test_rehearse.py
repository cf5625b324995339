"""medmtl-rehearse: every study job composed as the sweep composes it, rehearsed at full size.

CI rehearses two full-size cells (PSPNet + ResNet50 / ResNeXt50, 16 x 256 px) and checks the
jobs lists and the measurements; ``make test-full`` rehearses every job of every study."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from medmtl.errors import ConfigError
from medmtl.settings.commands import STUDIES
from medmtl.training.flops import flop_counter
from medmtl.workflows.rehearse import Cell, identity, markdown, select, study_jobs

# jobs per study: the sweep parameters' product
JOBS = {"table_lambda": 5, "table_arch_backbone": 16, "table_arch_backbone_all": 36,
        "table_transformer": 15, "stl_vs_mtl": 3, "loss_ablation": 20, "curated": 4}  # fmt: skip


def test_every_study_expands_to_its_jobs():
    assert set(JOBS) == set(STUDIES)
    for study, n in JOBS.items():
        jobs = study_jobs(study)
        assert len(jobs) == n, study
        assert len({tuple(j) for j in jobs}) == n  # no job twice
    assert study_jobs("table_lambda")[0] == ["loss.seg_weight=0.1"]
    assert ["model/arch=deeplabv3plus", "model/encoder=efficientnet_b4"] in study_jobs(
        "table_arch_backbone"
    )


def test_select_matches_whole_overrides_and_limits_each_study():
    cells = [Cell(s, i, j) for s in ("table_arch_backbone",) for i, j in
             enumerate(study_jobs(s))]  # fmt: skip
    unet = select(cells, ["model/arch=unet"], None)
    assert len(unet) == 4  # not Unet++
    assert all("model/arch=unet" in c.overrides for c in unet)
    assert len(select(cells, ["unet"], None)) == 8  # a bare word is found inside
    assert [c.job for c in select(cells, [], 3)] == [0, 1, 2]


def test_identity_ignores_the_study_name_and_run_folder(tmp_path):
    from medmtl.workflows.rehearse import _compose

    def cfg(study, job, overrides, where):
        return _compose(Cell(study, job, overrides), "gpu", tmp_path / where)[0]

    unet_b4 = ["model/arch=unet", "model/encoder=efficientnet_b4"]
    same_a = cfg("table_arch_backbone", 3, unet_b4, "a")
    same_b = cfg("table_arch_backbone_all", 3, unet_b4, "b")
    assert identity(same_a) == identity(same_b)
    # λ = 0.7 of table_lambda is table_arch_backbone's Unet + EfficientNet-b4 cell
    assert identity(cfg("table_lambda", 3, ["loss.seg_weight=0.7"], "c")) == identity(same_a)
    assert identity(cfg("table_lambda", 4, ["loss.seg_weight=0.9"], "d")) != identity(same_a)
    # the job as profile=gpu composes it: the study's size, batch and weights
    assert same_a.data.image_size == 256 and same_a.data.batch_size == 16
    assert same_a.trainer.accelerator == "cpu" and same_a.trainer.limit_train_batches == 2


def test_training_flops_of_a_depthwise_network_are_about_three_forwards():
    """torch's own formula counts a depthwise convolution's weight gradient ``groups`` times."""
    import segmentation_models_pytorch as smp

    net = smp.Unet("efficientnet-b0", encoder_weights=None, in_channels=1, classes=1)
    x = torch.randn(2, 1, 64, 64)
    with flop_counter() as fwd:
        net(x)
    with flop_counter() as train:
        net(x).mean().backward()
    ratio = train.get_total_flops() / fwd.get_total_flops()
    assert 2.5 < ratio < 3.2, ratio
    conv = torch.nn.Conv2d(8, 8, 3, groups=8, padding=1)
    y = torch.randn(1, 8, 16, 16, requires_grad=True)
    with flop_counter() as one:
        conv(y).sum().backward()
    # forward, grad input and grad weight: 3 x (2 x 16 x 16 x 8 x 9)
    assert one.get_total_flops() == 3 * 2 * 16 * 16 * 8 * 9


def test_markdown_counts_passes_and_shows_reasons():
    cells = [
        Cell("table_lambda", 0, ["loss.seg_weight=0.1"], "pass", "", "imagenet", 19.5, 16, 256,
             9.0, 27.1, 5595.0, 90.0),
        Cell("table_lambda", 1, ["loss.seg_weight=0.3"], "fail", "out of memory"),
    ]  # fmt: skip
    text = markdown(cells, "gpu")
    assert text.startswith("1 of 2 jobs pass (profile=gpu")
    assert "| 16 × 256 | 9.0 | 27.1 | 5,595 |" in text
    assert "fail: out of memory" in text


# a study cell at full size on the CPU takes over a minute: make test-full; CI runs one full-size
# cell through every step in tests/bench/test_gpu_check.py (gpu-check --dry)
@pytest.mark.slow
@pytest.mark.parametrize("limit", [1, 2], ids=["one-cell", "two-cells"])
def test_study_cells_at_full_size(busi, tmp_path, limit):
    """PSPNet with ResNet50 (and ResNeXt50: the cheapest of the study's cells) as profile=gpu
    trains them (16 images of 256 px a step): two training steps, validation, calibration,
    test and the record; FLOPs and memory measured. make test-full rehearses one and two."""
    from medmtl.cli.rehearse import main

    out = tmp_path / "rehearse"
    doc = tmp_path / "cluster.md"
    status = main(["studies=[table_arch_backbone_all]", "match=[model/arch=pspnet]",
                   f"limit={limit}", f"out={out}", f"into={doc}:rehearsal"])  # fmt: skip
    assert status == 0
    rows = list(csv.DictReader((out / "rehearsal.csv").open()))
    assert [r["status"] for r in rows] == ["pass"] * limit, rows
    for row in rows:
        assert (row["batch"], row["image_size"]) == ("16", "256")
        assert 20 < float(row["params_m"]) < 40  # PSPNet on a 50-layer encoder's 3 stages
        fwd, train = float(row["forward_gflops"]), float(row["train_gflops"])
        assert 2 < fwd < 20 and 2.5 < train / fwd < 3.2, (fwd, train)
        assert float(row["peak_train_mib"]) > 500
        run = out / "table_arch_backbone_all" / row["job"]
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["global_step"] == 2 and "test/seg_dice" in metrics
        assert not (run / "checkpoints").exists()  # removed: hundreds of MB a job
    assert "medmtl-rehearse 'studies=[table_arch_backbone_all]'" in doc.read_text()


@pytest.mark.slow
def test_every_study_cell_passes(busi, tmp_path):
    """All jobs of all six studies (about 90 minutes on 2 cores)."""
    from medmtl.cli.rehearse import main

    out = tmp_path / "rehearse"
    assert main([f"out={out}"]) == 0
    rows = list(csv.DictReader((out / "rehearsal.csv").open()))
    assert len(rows) == sum(JOBS.values())
    assert all(r["status"].startswith("pass") for r in rows)


def test_no_matching_job_is_one_line(capsys):
    from medmtl.cli.rehearse import main
    from tests.conftest import refused

    line = refused(lambda: main(["studies=[stl_vs_mtl]", "match=[model/arch=pan]"]), capsys)
    assert "match=['model/arch=pan']: no job of stl_vs_mtl matches" in line


def _earlier(out, rows: list[dict]) -> None:
    from medmtl.workflows.rehearse import COLUMNS

    out.mkdir(parents=True)
    with (out / "rehearsal.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows([{k: r.get(k, "") for k in COLUMNS} for r in rows])


PASSED = {"study": "table_lambda", "job": 3, "status": "pass", "weights": "random (imagenet ...)",
          "params_m": 19.53, "batch": 16, "image_size": 256, "forward_gflops": 9.0,
          "train_gflops": 26.9, "peak_train_mib": 5595.0, "seconds": 86.0}  # fmt: skip


def test_a_rehearsal_goes_on_where_an_earlier_one_stopped(tmp_path):
    """Jobs that passed into the same folder are not trained again, their twins neither; the
    earlier rows stay in the table."""
    from medmtl.workflows.rehearse import rehearse

    out = tmp_path / "r"
    _earlier(out, [PASSED, {**PASSED, "job": 4, "status": "fail", "reason": "x"}])
    cells = rehearse(["table_lambda"], out, match=["loss.seg_weight=0.7"])
    assert (
        len(cells) == 1 and cells[0].status == "pass" and cells[0].seconds == 86.0
    )  # its own, not re-run
    twin = rehearse(["table_arch_backbone"], out, match=["model/arch=unet",
                    "model/encoder=efficientnet_b4"])[0]  # fmt: skip
    assert twin.status == "pass (= table_lambda #3)" and twin.train_gflops == 26.9
    rows = list(csv.DictReader((out / "rehearsal.csv").open()))
    assert [(r["study"], r["job"]) for r in rows] == [("table_arch_backbone", "3"),
                                                      ("table_lambda", "3")]  # fmt: skip
    assert not (out / "table_lambda" / "3" / "metrics.json").exists()  # nothing trained
    # report=true: the table so far, the rest listed, nothing trained
    report = rehearse(["table_lambda"], out, train_new=False)
    assert [c.status for c in report] == ["not rehearsed yet"] * 3 + ["pass", "not rehearsed yet"]
    text = (out / "rehearsal.md").read_text()
    assert text.startswith("1 of 5 jobs pass, 4 not rehearsed yet (profile=gpu")
    assert not any((out / "table_lambda" / str(j)).exists() for j in range(5))


def test_a_damaged_earlier_table_is_one_line(tmp_path):
    from medmtl.workflows.rehearse import rehearse

    out = tmp_path / "r"
    _earlier(out, [{**PASSED, "job": "three"}])
    with pytest.raises(ConfigError, match=r"rehearsal.csv: cannot go on from it"):
        rehearse(["table_lambda"], out, limit=1)

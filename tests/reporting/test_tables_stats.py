"""medmtl-tables with CIs, paired tests, the study's reference data and the arch × backbone grid.

Sweeps are fabricated from constructed per-image predictions (their metrics.json is computed
from them), so every expected number is known.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from medmtl.reporting.per_image import metrics_dict, read_predictions, write_predictions
from medmtl.reporting.render import render, render_grid
from medmtl.reporting.runs import collect_runs
from medmtl.reporting.statistics import bootstrap_ci
from medmtl.reporting.study import study_reference
from medmtl.reporting.tables import COLUMN_SETS, build_table, compare_with_baseline, table_cells
from medmtl.workflows.tables import write_tables
from tests.conftest import run_cli
from tests.reporting.test_statistics import make_run


def fake_run(
    job: Path,
    overrides: dict[str, str],
    acc: float,
    dice: float,
    seed: int,
    extra: dict | None = None,
) -> None:
    """A finished job folder as medmtl-train writes it."""
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()])
    )
    run = make_run(acc=acc, dice=dice, seed=seed)
    run.dataset, run.split = "busi", "test"
    write_predictions(job / "predictions_test.csv", run)
    metrics = metrics_dict(run, "test")
    metrics.update({"data/name": "busi", "seed": int(overrides.get("seed", 0))})
    metrics.update(extra or {})
    (job / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture(scope="module")
def lambda_sweep(tmp_path_factory) -> Path:
    """λ ∈ {0.3, 0.7, 0.9} × 2 seeds: 0.3 much worse, 0.9 the same runs as 0.7."""
    root = tmp_path_factory.mktemp("lambda_sweep")
    job = 0
    for lam, acc, dice in (("0.3", 0.55, 0.45), ("0.7", 0.85, 0.75), ("0.9", 0.85, 0.75)):
        for seed in (0, 1):
            fake_run(
                root / str(job),
                {"loss.seg_weight": lam, "seed": str(seed)},
                acc,
                dice,
                seed=10 + seed,  # the same images and outcomes for 0.7 and 0.9
                extra={"loss/seg_weight": float(lam), "model/task": "multitask"},
            )
            job += 1
    return root


def test_cells_recompute_from_predictions_and_carry_cis(lambda_sweep):
    table = build_table(collect_runs(lambda_sweep), lambda_sweep)
    assert table.kind == "lambda" and table.labels() == ["λ=0.3", "λ=0.7", "λ=0.9"]
    header, texts, _ = table_cells(table, ci=True)
    for (_label, members, _), cells in zip(table.rows, texts, strict=True):
        values = [
            metrics_dict(read_predictions(m.path / "predictions_test.csv"))["test/seg_dice"]
            for m in members
        ]
        cell = cells[header.index("Dice")]
        assert cell.startswith(f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} ["), cell
    # a single run shows its bootstrap CI over the test images
    one = build_table(collect_runs(lambda_sweep / "0"), lambda_sweep / "0")
    header, texts, _ = table_cells(one, ci=True)
    ci = bootstrap_ci(read_predictions(lambda_sweep / "0" / "predictions_test.csv"), ["cls_acc"])
    assert texts[0][header.index("Acc")] == (
        f"{ci['cls_acc'].value:.3f} [{ci['cls_acc'].low:.3f}, {ci['cls_acc'].high:.3f}]"
    )


def test_baseline_comparison_marks_what_is_significant(lambda_sweep, tmp_path):
    table = build_table(collect_runs(lambda_sweep), lambda_sweep)
    comps = {c.label: c for c in compare_with_baseline(table, "λ=0.7")}
    same, worse = comps["λ=0.9"], comps["λ=0.3"]
    assert same.paired and worse.paired  # both rows have seeds 0 and 1
    assert same.diffs["seg_dice"].ci.value == 0 and same.diffs["seg_dice"].p == 1.0
    assert not same.diffs["cls_acc"].significant
    assert worse.diffs["cls_acc"].significant and worse.diffs["cls_acc"].ci.high < 0
    assert worse.diffs["cls_acc"].p_holm >= worse.diffs["cls_acc"].p  # Holm never lowers p
    _, files = write_tables(lambda_sweep, tmp_path, reference="study", baseline="λ=0.7")
    md = files["md"].read_text()
    assert "λ=0.3 vs λ=0.7 (paired by seed/fold): Acc −0." in md and "not significant" in md
    assert "†" in md.split("λ=0.3")[1].split("\n")[0]  # the worse row is marked
    assert "†" not in md.split("| λ=0.9")[1].split("\n")[0]
    csv_text = files["csv"].read_text().splitlines()
    assert "significant Acc" in csv_text[0] and "p Dice Holm" in csv_text[0]
    row = next(r for r in csv_text if r.startswith("λ=0.3"))
    assert row.endswith(("true", "false")) and ",true," in row
    assert r"$^\dagger$" in files["tex"].read_text()
    assert files["forest"].exists() and files["lambda_curve"].exists()
    assert "study (published)" in md and "0.783" in md  # the study's λ = 0.3 row


def test_unknown_baseline_lists_the_rows(lambda_sweep):
    res = run_cli("tables", str(lambda_sweep), "--baseline", "λ=0.5")
    assert res.returncode == 2 and "'λ=0.7'" in res.stderr and "Traceback" not in res.stderr


def test_reference_study_refused_for_other_data(tmp_path):
    fake_run(tmp_path / "0", {"loss.seg_weight": "0.3"}, 0.8, 0.7, 0, {"data/name": "phantom"})
    fake_run(tmp_path / "1", {"loss.seg_weight": "0.7"}, 0.8, 0.7, 1, {"data/name": "phantom"})
    res = run_cli("tables", str(tmp_path), "--reference", "study")
    assert res.returncode == 2 and "phantom" in res.stderr and "BUSI" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_study_reference_has_all_cells():
    rows = study_reference()
    assert sum(r.table == "lambda" for r in rows) == 5
    assert sum(r.table == "arch_backbone" for r in rows) == 16
    best = next(r for r in rows if r.arch == "unet" and r.backbone == "efficientnet_b4")
    assert best.values["test/cls_acc"] == 0.904 and best.values["test/seg_dice"] == 0.817


def _arch_run(root: Path, job: int, arch: str, enc: str, extra_ov: dict | None = None):
    smp_arch = {"unet": "Unet", "fpn": "FPN", "unetplusplus": "UnetPlusPlus"}[arch]
    fake_run(
        root / str(job),
        {"model/arch": arch, "model/encoder": enc, **(extra_ov or {})},
        0.8,
        0.7,
        job,
        {
            "model/arch": smp_arch,
            "model/encoder": "tu-efficientnet_lite0" if enc == "efficientnet_b4" else enc,
            "model/encoder_study": "tu-efficientnet_b4" if enc == "efficientnet_b4" else enc,
            "model/encoder_weights": "lite0_offline" if enc == "efficientnet_b4" else None,
        },
    )


def test_grid_with_a_missing_and_a_failed_cell(tmp_path):
    _arch_run(tmp_path, 0, "unet", "efficientnet_b4")
    _arch_run(tmp_path, 1, "fpn", "efficientnet_b4")
    _arch_run(tmp_path, 2, "unet", "resnet50")
    failed = tmp_path / "3"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["model/arch=fpn", "model/encoder=resnet50"])
    )
    (failed / "failed.json").write_text(json.dumps({"error": "boom"}))
    table = build_table(collect_runs(tmp_path), tmp_path)
    assert table.kind == "arch_backbone"
    md = render_grid(table, "md")
    unet = next(ln for ln in md.splitlines() if ln.startswith("| Unet |"))
    fpn = next(ln for ln in md.splitlines() if ln.startswith("| FPN |"))
    assert "(0.817)" in unet and "(0.756)" in unet  # ours beside the study's
    assert "failed (0.601)" in fpn  # FPN + ResNet50 failed
    assert "missing (0.771)" in md  # Unet++ + ResNeXt50 (study Dice 0.771) was not run
    assert "| ResNet50 | ResNeXt50 | WideResNet50 | EfficientNet-b4 |" in md
    _, files = write_tables(tmp_path, tmp_path / "t", reference="study")
    assert files["heatmap"].exists() and files["grid_md"].exists()


def test_single_backbone_sweep_keeps_backbone_and_finds_reference(tmp_path):
    for job, arch in enumerate(("unet", "fpn")):
        _arch_run(tmp_path, job, arch, "efficientnet_b4")
    table = build_table(collect_runs(tmp_path), tmp_path)
    assert table.kind == "arch_backbone"
    assert table.labels()[1] == (
        "unet + efficientnet_b4 (CPU stand-in: tu-efficientnet_lite0; weights: lite0_offline)"
    )
    md = render(table, "md", reference="study", ci=False)
    assert md.count("study (published)") == 2 and "0.904" in md and "0.796" in md


def test_optuna_folder_is_a_search_with_named_settings(tmp_path):
    for job, (lam, lr) in enumerate((("0.31", "0.0012"), ("0.52", "0.0004"))):
        fake_run(tmp_path / str(job), {"loss.seg_weight": lam, "optimizer.lr": lr}, 0.8, 0.7, job)
    (tmp_path / "optimization_results.yaml").write_text("name: optuna\nbest_value: 0.7\n")
    table = build_table(collect_runs(tmp_path), tmp_path)
    assert table.kind == "search" and table.title == "Hyper-parameter search"
    assert table.labels() == ["λ=0.31 + optimizer.lr=0.0012", "λ=0.52 + optimizer.lr=0.0004"]


def test_an_ensemble_in_the_sweep_folder_is_a_row_after_its_members(lambda_sweep, tmp_path):
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(lambda_sweep, sweep)
    ens = sweep / "ensembles" / "lambda_0.7"
    ens.mkdir(parents=True)
    run = make_run(acc=0.9, dice=0.8, seed=10)
    write_predictions(ens / "predictions_test.csv", run)
    metrics = metrics_dict(run, "test")
    metrics.update(
        {
            "data/name": "busi",
            "ensemble/size": 2,
            "ensemble/overrides": {"loss.seg_weight": "0.7"},
        }
    )
    (ens / "metrics.json").write_text(json.dumps(metrics))
    table = build_table(collect_runs(sweep), sweep)
    assert table.kind == "lambda"
    assert table.labels() == ["λ=0.3", "λ=0.7", "λ=0.7 · ensemble of 2", "λ=0.9"]
    header, texts, _ = table_cells(table, ci=True)
    assert texts[2][header.index("Acc")].startswith(f"{metrics['test/cls_acc']:.3f} [")
    comps = {c.label: c for c in compare_with_baseline(table, "λ=0.7")}
    assert not comps["λ=0.7 · ensemble of 2"].paired  # against the baseline's averaged runs


def test_baseline_by_the_start_of_its_label(lambda_sweep):
    from medmtl.errors import MedmtlError
    from medmtl.reporting.tables import find_row

    table = build_table(collect_runs(lambda_sweep), lambda_sweep)
    assert find_row(table, "λ=0.7") == "λ=0.7"
    table.rows.append(("λ=0.7 · ensemble of 2", table.rows[1][1], table.rows[1][2]))
    with pytest.raises(MedmtlError, match="not a row"):
        find_row(table, "λ=0.")
    assert find_row(table, "λ=0.7 ") == "λ=0.7 · ensemble of 2"


def test_overall_is_not_compared_across_tasks(tmp_path):
    """A classification-only row has no Dice, and its Overall (= F1) is not the baseline's."""
    from medmtl.reporting.per_image import PerImage

    for job, task in enumerate(("cls", "multitask")):
        d = tmp_path / str(job)
        fake_run(d, {"model.task": task}, 0.8, 0.7, 3)
        if task == "cls":  # drop the segmentation columns: a classification-only run
            p = read_predictions(d / "predictions_test.csv")
            p = PerImage(p.ids, p.classes, p.label, p.prob, dataset="busi", split="test")
            write_predictions(d / "predictions_test.csv", p)
    table = build_table(collect_runs(tmp_path), tmp_path)
    (comp,) = compare_with_baseline(table, "multitask")
    assert "cls_acc" in comp.diffs and "seg_dice" not in comp.diffs
    assert "overall" not in comp.diffs


def test_validation_columns_show_no_test_metric(tmp_path):
    from medmtl.reporting.tables import COLUMN_SETS

    assert all(not c.key.startswith("test/") for c in COLUMN_SETS["validation"])
    fake_run(tmp_path / "0", {"data.clahe": "true"}, 0.8, 0.7, 0, {"val/overall": 0.75})
    fake_run(tmp_path / "1", {"data.clahe": "false"}, 0.8, 0.7, 1, {"val/overall": 0.7})
    md = render(build_table(collect_runs(tmp_path), tmp_path), "md", columns="validation")
    assert "| val overall |" in md and "**0.750**" in md and "| Acc |" not in md


def test_table_written_into_a_results_document_with_its_command(lambda_sweep, tmp_path):
    from medmtl.cli.tables import main

    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nhand-written prose stays\n")
    args = [str(lambda_sweep), "--out", str(tmp_path / "t"), "--baseline", "λ=0.7"]
    assert main([*args, "--into", f"{doc}:lambda"]) == 0
    assert main([*args, "--into", f"{doc}:lambda"]) == 0  # again: replaced, not appended
    text = doc.read_text()
    assert "hand-written prose stays" in text
    assert text.count("<!-- lambda:start -->") == 1 and text.count("<!-- lambda:end -->") == 1
    section = text.split("<!-- lambda:start -->")[1].split("<!-- lambda:end -->")[0]
    assert f"medmtl-tables {lambda_sweep} --out" in section and "'λ=0.7'" in section
    assert section == "\n" + "```bash\n" + section.split("```bash\n", 1)[1]
    assert (tmp_path / "t" / "lambda.md").read_text().strip() in section  # the table itself
    with pytest.raises(SystemExit) as bad:
        main([*args, "--into", str(doc)])  # no section name
    assert bad.value.code == 2


def test_false_positives_per_image_are_not_clipped_to_one(tmp_path):
    for seed, fp in ((0, 1.5), (1, 2.5)):
        fake_run(tmp_path / str(seed), {"seed": str(seed)}, 0.8, 0.7, seed,
                 extra={"test/fp_per_image": fp})  # fmt: skip
    table = build_table(collect_runs(tmp_path), tmp_path)
    header, texts, _ = table_cells(table, COLUMN_SETS["lesions"], ci=True)
    cell = texts[0][header.index("FP / image")]
    assert cell.startswith("2.00 ± 0.71 [") and float(cell.split(", ")[1].rstrip("]")) > 2.5

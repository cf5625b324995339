"""Sweeps on the tiny phantom, tables from their metrics.json, failures, Optuna, configs."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from medmtl.config import CONFIG_DIR
from medmtl.reporting.runs import Run, collect_runs
from medmtl.reporting.tables import COLUMN_SETS, build_table, table_cells
from medmtl.workflows.build import model_kwargs
from tests.conftest import TINY_MODEL, TINY_PHANTOM, run_cli

TINY = TINY_PHANTOM + TINY_MODEL + ["trainer.max_epochs=1", "trainer.log_every_n_steps=1"]
NOT_SWEEPS = {
    "demo",
    "busi_cpu",
    "busi_cpu_single",
    "busi_busbra_cpu",
    "cpu_member",
    "curated_cpu",
}  # recipes
EXPERIMENTS = sorted(
    p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml") if p.stem not in NOT_SWEEPS
)


def _train_multirun(sweep_dir: Path, cache: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_cli(
        "train",
        "-m",
        *TINY,
        f"paths.cache_dir={cache}",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
        timeout=900,
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache_dir) -> Path:
    """A 2 λ x 2 seeds sweep, plus nothing else."""
    out = tmp_path_factory.mktemp("sweep")
    res = _train_multirun(out, cache_dir, "loss.seg_weight=0.3,0.7", "seed=0,1")
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_table_cells_equal_metrics_json(sweep):
    runs = collect_runs(sweep)
    assert len(runs) == 4 and all(r.status == "ok" for r in runs)
    table = build_table(runs)
    assert table.kind == "lambda" and [row[0] for row in table.rows] == ["λ=0.3", "λ=0.7"]
    header, texts, _ = table_cells(table)
    for (label, members, _), cells in zip(table.rows, texts, strict=True):
        assert cells[-1] == "2/2"
        for col, key in (
            ("Dice", "test/seg_dice"),
            ("Acc", "test/cls_acc"),
            ("Overall", "test/overall"),
        ):
            values = [json.loads((m.path / "metrics.json").read_text())[key] for m in members]
            expected = f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"
            assert cells[header.index(col)] == expected, (label, col)


def test_recipe_columns_scale_and_cost(sweep):
    """The recipe column set shows lesion IoU, wall time in minutes and peak memory in GB."""
    table = build_table(collect_runs(sweep))
    header, texts, bold = table_cells(table, COLUMN_SETS["recipe"])
    assert header[1:-1] == [c.header for c in COLUMN_SETS["recipe"]]
    for (_, members, _), cells in zip(table.rows, texts, strict=True):
        metrics = [json.loads((m.path / "metrics.json").read_text()) for m in members]
        assert all(m["peak_rss_mb"] > 0 and m["wall_time_s"] > 0 for m in metrics)
        for col, key, scale, digits in (
            ("IoU lesion", "test/seg_iou_lesion", 1, 3),
            ("wall min", "wall_time_s", 1 / 60, 1),
            ("peak RSS GB", "peak_rss_mb", 1 / 1024, 2),
        ):
            values = [m[key] * scale for m in metrics]
            expected = (
                f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
            )
            assert cells[header.index(col)] == expected, col
    # lower is better for time and memory, higher for quality; epochs are not ranked
    runs = [
        Run(Path(f"r{i}"), {"loss.seg_weight": lam}, "ok", metrics=m)
        for i, (lam, m) in enumerate(
            [
                ("0.3", {"wall_time_s": 600, "test/seg_dice": 0.5, "epochs": 10}),
                ("0.7", {"wall_time_s": 900, "test/seg_dice": 0.6, "epochs": 20}),
            ]
        )
    ]
    header, texts, bold = table_cells(build_table(runs), COLUMN_SETS["recipe"])
    wall, dice, epochs = (header.index(h) for h in ("wall min", "Dice", "epochs"))
    assert texts[0][wall] == "10.0" and bold[0][wall] and not bold[1][wall]
    assert bold[1][dice] and not bold[0][dice]
    assert not bold[0][epochs] and not bold[1][epochs]


def test_calibration_columns_equal_metrics_json(sweep):
    """--columns calibration: test ECE / NLL / Brier and the fitted temperature of each row."""
    table = build_table(collect_runs(sweep))
    header, texts, _ = table_cells(table, COLUMN_SETS["calibration"])
    for (_, members, _), cells in zip(table.rows, texts, strict=True):
        metrics = [json.loads((m.path / "metrics.json").read_text()) for m in members]
        for col, key, digits in (
            ("NLL", "test/cls_nll", 3),
            ("Brier", "test/cls_brier", 3),
            ("T", "calibration/temperature", 2),
        ):
            values = [m[key] for m in metrics]
            expected = (
                f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
            )
            assert cells[header.index(col)] == expected, col
    assert next(c for c in COLUMN_SETS["calibration"] if c.header == "NLL").higher is False


def test_unrelated_settings_rows_are_named_by_what_they_set(tmp_path):
    """An exploration log (single runs, each changing something else) gets readable rows."""
    runs = [
        Run(tmp_path / "a", {"experiment": "busi_cpu"}, "ok", metrics={"test/cls_acc": 0.5}),
        Run(
            tmp_path / "b",
            {"experiment": "busi_cpu", "data.clahe": "true"},
            "ok",
            metrics={"test/cls_acc": 0.75},
        ),
        Run(
            tmp_path / "c",
            {"experiment": "busi_cpu", "data.image_size": "128", "data.clahe": "true"},
            "ok",
            metrics={"test/cls_acc": 0.25},
        ),
        Run(
            tmp_path / "d",
            {"experiment": "busi_cpu", "loss.seg_weight": "0.5"},
            "ok",
            metrics={"test/cls_acc": 0.125},
        ),
    ]
    table = build_table(runs)
    assert table.kind == "runs"
    labels = {row[0]: row[1][0].metrics["test/cls_acc"] for row in table.rows}
    assert labels == {
        "baseline (none of these set)": 0.5,
        "data.clahe=true": 0.75,
        "data.clahe=true, data.image_size=128": 0.25,
        "loss.seg_weight=0.5": 0.125,  # one λ among other changes is not a λ table
    }


def test_tables_cli_writes_md_csv_tex_and_refuses_the_study_for_phantom_runs(sweep, tmp_path):
    def tables(*extra: str) -> subprocess.CompletedProcess:
        return run_cli("tables", str(sweep), "--out", str(tmp_path), *extra, timeout=300)

    res = tables("--reference", "study")
    assert res.returncode == 2 and "phantom" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "lambda.md").exists()  # nothing half-written
    res = tables("--baseline", "λ=0.7")
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "lambda.md").read_text()
    assert md.startswith("### λ table") and "**" in md  # best value per column in bold
    assert "λ=0.3 vs λ=0.7 (paired by seed/fold): Acc" in md and " [" in md  # CIs
    assert (tmp_path / "lambda.csv").read_text().startswith("setting,Acc,F1")
    assert r"\toprule" in (tmp_path / "lambda.tex").read_text()
    assert (tmp_path / "lambda_curve.png").stat().st_size > 0
    assert (tmp_path / "lambda_forest.png").stat().st_size > 0


@pytest.mark.slow  # a sweep of its own; make test-full
def test_failing_job_is_marked_and_sweep_goes_on(tmp_path, cache_dir):
    out = tmp_path / "sweep"
    res = _train_multirun(
        out, cache_dir, "model.encoder.weights=null", "model.encoder.name=resnet19,resnet18"
    )
    # the failing first job does not stop the second; the sweep then exits 1 and names it
    assert res.returncode == 1, res.stderr[-3000:]
    assert "medmtl: error: 1 sweep job(s) failed" in res.stderr and str(out / "0") in res.stderr
    runs = collect_runs(out)
    assert sorted(r.status for r in runs) == ["failed", "ok"]
    table = build_table(runs)
    _, texts, _ = table_cells(table)
    failed_row = next(t for t in texts if "resnet19" in t[0])
    assert failed_row[1] == "failed" and failed_row[-1] == "0/1"
    ok_row = next(t for t in texts if "resnet18" in t[0])
    assert ok_row[1] not in ("failed", "—")
    assert any("resnet19" in p for p in table.problems)
    res = run_cli("tables", str(out))
    assert res.returncode == 1 and "NOT IN TABLE" in res.stderr and "| failed |" in res.stdout


def test_tables_bad_input(tmp_path, sweep):
    def run(path):
        return run_cli("tables", str(path), "--out", str(tmp_path / "t"))

    res = run(tmp_path / "missing")
    assert res.returncode == 2 and "multirun folder not found" in res.stderr
    (tmp_path / "empty").mkdir()
    res = run(tmp_path / "empty")
    assert res.returncode == 2 and "no runs found" in res.stderr
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("*.ckpt"))
    (copy / "1" / "metrics.json").write_text("{ not json")
    res = run(copy)
    assert res.returncode == 1
    assert "corrupt metrics.json" in res.stderr and "copy/1/metrics.json" in res.stderr
    assert "1/2" in res.stdout  # the readable runs still make the table


def test_unknown_experiment_is_a_clear_error(tmp_path):
    res = run_cli("train", "experiment=table_lamda", f"hydra.run.dir={tmp_path}", timeout=300)
    assert (
        res.returncode != 0
        and "experiment/table_lamda" in res.stderr
        and "Traceback" not in res.stderr
    )


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_for_both_profiles(experiment, profile):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"experiment={experiment}", f"profile={profile}", "paths.output_dir=/tmp/x"],
            return_hydra_config=True,
        )
    assert cfg.hydra.sweeper.params, "an experiment is a sweep"
    assert cfg.profile.name == profile
    job = OmegaConf.to_container(cfg, resolve=False)
    job.pop("hydra")
    OmegaConf.to_container(OmegaConf.create(job), resolve=True)
    size = cfg.data.image_size
    assert (size <= 128) if profile == "cpu" else (size >= 256)
    kw = model_kwargs(cfg.model, dict(cfg.profile.encoder_substitutes))
    if profile == "cpu" and cfg.model.encoder.name == "tu-efficientnet_b4":
        assert kw.encoder == "tu-efficientnet_lite0"  # light stand-in
    if profile == "gpu":
        assert kw.encoder == cfg.model.encoder.name


@pytest.mark.parametrize("launcher", ["joblib", "slurm", "slurm_cpu", "slurm_gpu"])
def test_launcher_configs_compose(launcher):
    pytest.importorskip(
        "hydra_plugins.hydra_joblib_launcher"
        if launcher == "joblib"
        else "hydra_plugins.hydra_submitit_launcher"
    )
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert "launcher" in str(cfg.hydra.launcher._target_).lower()
    if launcher.startswith("slurm"):
        assert (
            cfg.hydra.launcher._target_ == "hydra_plugins.medmtl_slurm.launcher.MedmtlSlurmLauncher"
        )
        # a CPU cluster refuses any GPU request: only the GPU preset asks for one
        assert cfg.hydra.launcher.gpus_per_node == (1 if launcher == "slurm_gpu" else None)
        assert cfg.hydra.launcher.max_num_timeout >= 1  # requeued jobs resume from last.ckpt


@pytest.mark.slow  # the optional optuna extra, a sweep of its own; make test-full
def test_optuna_two_trials(tmp_path, cache_dir):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    out = tmp_path / "optuna"
    res = _train_multirun(
        out,
        cache_dir,
        "hparams_search=lambda_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    result = (out / "optimization_results.yaml").read_text()
    assert "best_value" in result and "loss.seg_weight" in result
    assert len(list(out.glob("*/metrics.json"))) == 2


@pytest.mark.slow
def test_ddp_cpu_fast_dev_run(tmp_path, cache_dir):
    run_dir = tmp_path / "ddp"
    res = run_cli(
        "train",
        *TINY,
        "trainer=ddp_cpu",
        "debug=fast_dev_run",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run_dir / "metrics.json").exists()
    assert not [p for p in tmp_path.iterdir() if p != run_dir]  # one folder for both ranks


@pytest.mark.slow
def test_ddp_eval_matches_single_process(tiny_ckpt, tmp_path):
    def evaluate(*extra: str) -> dict:
        run_dir = tmp_path / ("ddp" if extra else "single")
        res = run_cli(
            "eval",
            f"ckpt_path={tiny_ckpt}",
            "split=test",
            f"hydra.run.dir={run_dir}",
            *extra,
            timeout=900,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        return json.loads((run_dir / "metrics.json").read_text())

    single = evaluate()
    ddp = evaluate("trainer=ddp_cpu")
    n = single["num_images"]
    # the distributed sampler repeats up to one image per rank when n is not a multiple of 2
    tol = 1e-6 if n % 2 == 0 else 1.0 / (n + 1)
    for key in (
        "test/seg_dice",
        "test/seg_dice_lesion",
        "test/cls_acc",
        "test/cls_f1",
        "test/overall",
    ):
        assert ddp[key] == pytest.approx(single[key], abs=tol), key


def test_profile_keeps_an_explicit_weights_setting(make_cfg):
    """profile=cpu swaps the encoder for a stand-in, but an explicit weights= wins and is recorded."""
    from medmtl.workflows.build import net_settings

    base = ["experiment=table_lambda", "model/encoder=efficientnet_b4"]
    kw = net_settings(make_cfg(base))
    assert kw.encoder == "tu-efficientnet_lite0" and kw.encoder_weights == "lite0_offline"
    kw = net_settings(make_cfg([*base, "model.encoder.weights=null"], name="explicit"))
    assert kw.encoder == "tu-efficientnet_lite0" and kw.encoder_weights is None
    assert kw.encoder_study == "tu-efficientnet_b4"


def test_kfold_sweep_runs_one_seed_per_fold():
    """experiment=table_lambda with 5 folds composes 5 x 5 jobs, not folds x seeds."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["experiment=table_lambda", "data.num_folds=5"],
            return_hydra_config=True,
        )
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    cli = ["data.fold=0,1,2,3,4"]
    parsed = OverridesParser.create().parse_overrides(params + cli)
    jobs = BasicSweeper.split_arguments(parsed, None)[0]
    assert len(jobs) == 25 and all(not any(o.startswith("seed=") for o in j) for j in jobs)
    parsed = OverridesParser.create().parse_overrides(params + cli + ["seed=0,1"])
    assert len(BasicSweeper.split_arguments(parsed, None)[0]) == 50  # seeds when asked for


def test_transformer_experiment_records_unpretrained_stand_in(make_cfg):
    from medmtl.workflows.build import net_settings

    kw = net_settings(make_cfg(["experiment=table_transformer", "model/encoder=mit_b2"]))
    assert kw.encoder == "mit_b0" and kw.encoder_weights is None

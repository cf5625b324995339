"""Shared fixtures: BUSI location, a tiny phantom, and Hydra config composition."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# `make test` runs two pytest-xdist workers on CI's two cores: each computes on one thread, and
# so do the commands it starts (set before torch is imported), instead of four threads fighting
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from medmtl.config import compose, project_root  # noqa: E402

ROOT = project_root()

# the unit tier (`make test` runs it first, in seconds): settings, the run record, the
# registry, the option parser, metrics and losses; a test there that needs a trained model,
# a data set or a service is integration all the same
UNIT_FILES = (
    "tests/settings/",
    "tests/test_metrics.py",
    "tests/test_architecture.py",
    "tests/training/test_metrics.py",
    "tests/training/test_losses.py",
    "tests/training/test_schedules.py",
    "tests/models/test_conformal.py",
    "tests/models/test_postprocess.py",
    "tests/models/test_upgrade.py",
    "tests/cli/test_every_option.py",
    "tests/cli/test_train_options.py",
)
HEAVY_FIXTURES = {"tiny_run", "tiny_ckpt", "trained", "busi", "busbra", "busbra_real", "slurm_env",
                  "orthanc", "browser", "shared_once"}  # fmt: skip


# the longest test files (minutes each: a cluster, study cells, sweeps), handed to the workers
# first so that neither waits alone for one of them at the end of the run
LONGEST_FIRST = (
    "tests/workflows/test_slurm.py",
    "tests/workflows/test_rehearse.py",
    "tests/bench/test_gpu_check.py",
    "tests/workflows/test_train.py",
    "tests/workflows/test_ensemble.py",
    "tests/workflows/test_wandb.py",
    "tests/reporting/test_sweeps_tables.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the unit tier (``-m unit``; everything else is ``integration``) and run the
    longest files first (the order of the tests inside a file is kept)."""
    rank: dict[str, int] = {}
    for item in items:
        where = Path(str(item.fspath)).relative_to(ROOT).as_posix()
        unit = where.startswith(UNIT_FILES) and not HEAVY_FIXTURES & set(item.fixturenames)
        item.add_marker(pytest.mark.unit if unit else pytest.mark.integration)
        first = LONGEST_FIRST.index(where) if where in LONGEST_FIRST else len(LONGEST_FIRST)
        rank[item.nodeid] = first
    items.sort(key=lambda item: rank[item.nodeid])  # stable: every file's own order stays


def _dicom_dir() -> Path:
    """The shared sample DICOM files: DICOM_DIR, else beside BUSI_ROOT's data folder, else ../shared."""
    if os.environ.get("DICOM_DIR"):
        return Path(os.environ["DICOM_DIR"])
    if os.environ.get("BUSI_ROOT"):
        beside = Path(os.environ["BUSI_ROOT"]).resolve().parents[1] / "dicom"
        if beside.is_dir():
            return beside
    return ROOT.parent / "shared" / "data" / "dicom"


DICOM_DIR = _dicom_dir()

# A phantom small enough for unit tests (the demo uses the full one).
TINY_PHANTOM = [
    "data.phantom.counts.normal=10",
    "data.phantom.counts.benign=15",
    "data.phantom.counts.malignant=15",
    "data.phantom.size=96",
]
# A model small enough for unit tests.
TINY_MODEL = [
    "model/encoder=efficientnet_lite0",
    "+model.arch.kwargs.decoder_channels=[32,16,16,8,8]",
    "model.cls_hidden=32",
    "data.image_size=64",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    # precision=auto times a step where the CPU has bf16; on a busy CI machine a tiny model's
    # timing can go either way, and tests that compare two runs need both in one precision
    "trainer.precision=32-true",
    # the figures take 40 % of a tiny run; the tests of the figures ask for them (figures=true)
    "figures=false",
]


def refused(run, capsys) -> str:
    """Call a command's ``main`` in-process (``run``): it must exit 2 with one ``medmtl:
    error:`` line and no traceback; returns that line."""
    with pytest.raises(SystemExit) as done:
        status = run()
        raise SystemExit(status)
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("medmtl: error: ")]
    assert done.value.code == 2 and len(errors) == 1 and "Traceback" not in err, err[-1500:]
    return errors[0]


def run_cli(
    command: str,
    *args: str,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
) -> subprocess.CompletedProcess:
    """``medmtl-<command> args...`` in a subprocess, as a user runs it (``python -m
    medmtl.cli.<command>``), with its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", f"medmtl.cli.{command}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def busi_location() -> Path:
    """Where data=busi looks: BUSI_ROOT, else data/Dataset_BUSI_with_GT in the repository."""
    return Path(compose("train", ["data=busi"]).data.root)


def busi_root() -> Path | None:
    root = busi_location()
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def busi() -> Path:
    """The BUSI folder; skipped when absent, a failure when REQUIRE_BUSI=1 (CI)."""
    root = busi_root()
    if root is None:
        if os.environ.get("REQUIRE_BUSI") == "1":
            pytest.fail(f"BUSI not found at {busi_location()} and REQUIRE_BUSI=1 (set BUSI_ROOT)")
        pytest.skip("BUSI not available (set BUSI_ROOT)")
    return root


def _stream_handlers() -> dict[logging.Logger, set[logging.Handler]]:
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                     if isinstance(lg, logging.Logger))]  # fmt: skip
    # exactly these types: pytest's own capture handlers subclass StreamHandler
    kinds = (logging.StreamHandler, logging.FileHandler)
    return {lg: {h for h in lg.handlers if type(h) in kinds} for lg in loggers}


@pytest.fixture(autouse=True)
def _logging_as_before():
    """A command run in-process (Hydra's) sets up logging onto the streams this test captures,
    which pytest closes after it: later tests would log into closed streams ('--- Logging
    error ---'). The stream handlers a test added are taken away after it."""
    before = _stream_handlers()
    yield
    for logger, handlers in _stream_handlers().items():
        for handler in handlers - before.get(logger, set()):
            logger.removeHandler(handler)
            handler.close()


@pytest.fixture(autouse=True)
def _need_shared_dicom(request):
    """Tests that use the shared DICOM samples fail under REQUIRE_BUSI=1 (CI) if they are missing."""
    if request.node.module.__name__ not in DICOM_MODULES:
        return
    if not (DICOM_DIR / "CT_small.dcm").exists():
        if os.environ.get("REQUIRE_BUSI") == "1":
            pytest.fail(f"shared DICOM samples not found at {DICOM_DIR} (set DICOM_DIR)")
        pytest.skip("shared DICOM samples not available (set DICOM_DIR)")


DICOM_MODULES = {
    "tests.io.test_dicom",
    "tests.io.test_privacy",
    "tests.workflows.test_preprocess",
    "tests.inference.test_predict",
    "tests.inference.test_dicom_seg",
    "tests.io.test_dicomweb",
    "tests.io.test_dicom_rules",
    "tests.test_notebooks",
}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the whole session, so the phantom and BUSI are decoded once."""
    return tmp_path_factory.mktemp("cache")


def compose_cfg(
    overrides: list[str], out_dir: Path, cache: Path, config_name: str = "train"
) -> DictConfig:
    """Compose a config as the CLI would, with the run folder and cache in tmp folders."""
    cfg = compose(config_name, overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.cache_dir = str(cache)
        del cfg["hydra"]
    return cfg


@pytest.fixture
def make_cfg(tmp_path, cache_dir):
    """``make_cfg(overrides, name="run")`` -> a train config writing into tmp_path/name."""

    def _make(overrides: list[str], name: str = "run", config_name: str = "train") -> DictConfig:
        return compose_cfg(overrides, tmp_path / name, cache_dir, config_name)

    return _make


def train_tiny(out: Path, cache: Path, seed: int) -> Path:
    """Train a tiny multi-task model for one epoch on the tiny phantom; returns its run folder."""
    from medmtl.workflows.train import train

    overrides = TINY_PHANTOM + TINY_MODEL + ["trainer.max_epochs=1", f"seed={seed}", "figures=true"]
    train(compose_cfg(overrides, out, cache))
    return out


def shared_once(tmp_path_factory, name: str, make: Callable[[Path], Any]) -> Path:
    """``make(<folder>)`` once for the whole test run, also across pytest-xdist's workers
    (their base folders share a parent): the others wait for it and reuse what it made, which
    the tests only read (a test that changes it works on a copy)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)  # a half-made one of a stopped run
            make(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, cache_dir) -> Path:
    """A tiny multi-task model trained for one epoch on the tiny phantom (its run folder),
    trained once for all the test processes."""
    return shared_once(tmp_path_factory, "tiny_run", lambda out: train_tiny(out, cache_dir, 1))


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_run) -> Path:
    return next((tiny_run / "checkpoints").glob("epoch*.ckpt"))


def partial_mask_threshold(ckpt: Path, image: Path) -> float:
    """A mask threshold at which ``ckpt``'s mask of ``image`` covers some of it but at most half
    (a check that two masks are equal says little when both are empty or full)."""
    import numpy as np

    from medmtl.inference.core import predict_image
    from medmtl.workflows.predict import open_checkpoint

    prob8 = predict_image(open_checkpoint(ckpt), image).probability8
    assert prob8 is not None, f"{ckpt}: no mask head"
    for value in np.unique(prob8)[1:]:
        if (prob8 >= value).mean() <= 0.5:
            return float(value) / 255
    raise AssertionError(
        f"{ckpt}: its probability map of {image.name} is flat ({np.unique(prob8)})"
    )


def make_busbra(root: Path, busi: Path, per_class: int = 12, side: int = 160) -> Path:
    """A small BUS-BRA in its distributed layout, from BUSI images with made-up patients.

    bus_data.csv (ID,Case,Histology,Pathology,BIRADS,Device,Width,Height,Side,BBOX), Images/
    (8-bit grey PNG, bus_<case>-<side>.png), Masks/ (mask_<case>-<side>.png), 5-fold-cv.csv
    (ID,Pathology,kFold,valid_1..valid_5) and 10-fold-cv.csv (ID,Pathology,kFold). Patients
    have one or two images (left/right, or a second view); every fold is patient-level.
    """
    import csv

    import numpy as np
    from PIL import Image

    (root / "Images").mkdir(parents=True)
    (root / "Masks").mkdir()
    rows, case = [], 0
    devices = ("Toshiba Aplio 300", "GE Logiq 5")
    for pathology in ("benign", "malignant"):
        files = sorted((busi / pathology).glob(f"{pathology} (*).png"))
        files = [f for f in files if "_mask" not in f.name][:per_class]
        k = 0
        while k < len(files):
            case += 1
            n = 2 if case % 3 else 1  # two images for two patients in three
            for j, f in enumerate(files[k : k + n]):
                image_id = f"bus_{case:04d}-{'lr'[j]}"
                img = Image.open(f).convert("L")
                scale = side / img.width
                size = (side, max(32, round(img.height * scale)))
                img.resize(size).save(root / "Images" / f"{image_id}.png")
                mask = np.asarray(Image.open(f.with_name(f.stem + "_mask.png")).convert("L")) > 0
                m = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)
                m.save(root / "Masks" / f"mask_{image_id.removeprefix('bus_')}.png")
                ys, xs = np.nonzero(np.asarray(m))
                bbox = f"[{xs.min()}, {ys.min()}, {xs.max() - xs.min()}, {ys.max() - ys.min()}]"
                rows.append(
                    {
                        "ID": image_id,
                        "Case": str(case),
                        "Histology": "Fibroadenoma"
                        if pathology == "benign"
                        else "Invasive ductal carcinoma",
                        "Pathology": pathology,
                        "BIRADS": "3" if pathology == "benign" else "5",
                        "Device": devices[case % 2],
                        "Width": str(size[0]),
                        "Height": str(size[1]),
                        "Side": "left" if j == 0 else "right",
                        "BBOX": bbox,
                    }
                )
            k += n
    with (root / "bus_data.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cases = sorted({int(r["Case"]) for r in rows})
    for k_folds in (5, 10):
        fold_of = {c: 1 + i % k_folds for i, c in enumerate(cases)}
        head = ["ID", "Pathology", "kFold"] + (
            [f"valid_{r}" for r in range(1, 6)] if k_folds == 5 else []
        )
        with (root / f"{k_folds}-fold-cv.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(head)
            for r in rows:
                fold = fold_of[int(r["Case"])]
                out = [r["ID"], r["Pathology"], fold]
                if k_folds == 5:  # round t: fold t is the test fold, the next one validates
                    out += ["" if fold == t else int(fold != 1 + t % 5) for t in range(1, 6)]
                w.writerow(out)
    return root


def busbra_location() -> Path:
    """Where data=busbra looks: BUSBRA_ROOT, else data/BUSBRA in the repository."""
    return Path(compose("train", ["data=busbra"]).data.root)


@pytest.fixture(scope="session")
def busbra_real() -> Path:
    """The real BUS-BRA folder (in CI its GE Logiq 7 part); skipped when absent, a failure
    when REQUIRE_BUSBRA=1 (CI)."""
    root = busbra_location()
    if not (root / "bus_data.csv").is_file():
        if os.environ.get("REQUIRE_BUSBRA") == "1":
            pytest.fail(f"BUS-BRA not found at {root} and REQUIRE_BUSBRA=1 (set BUSBRA_ROOT)")
        pytest.skip("BUS-BRA not available (set BUSBRA_ROOT)")
    return root


@pytest.fixture(scope="session")
def busbra(busi, tmp_path_factory) -> Path:
    """A small BUS-BRA fixture (24 BUSI images, 16 made-up patients), see make_busbra."""
    return make_busbra(tmp_path_factory.mktemp("busbra") / "BUSBRA", busi)

"""Sweeps and DDP through a real one-node SLURM (Debian's slurm-wlm + munge).

The session fixture starts the cluster with ``scripts/slurm-local`` (its own folder and ports)
and stops it at the end; without slurm-wlm the tests skip, and fail under REQUIRE_SLURM=1 (CI).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medmtl.workflows import slurm
from tests.conftest import TINY_MODEL, TINY_PHANTOM, run_cli

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm-local"
TINY = [*TINY_PHANTOM, *TINY_MODEL, "trainer.max_epochs=1"]
# one job at a time on the node (2 CPUs each), small memory so a 24 GB node takes it
LAUNCH = ["hydra/launcher=slurm_cpu", "hydra.launcher.mem_gb=2"]


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", 0))
                port = a.getsockname()[1]
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two free neighbouring ports")


@pytest.fixture(scope="session")
def slurm_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a running one-node SLURM started for this session."""
    if shutil.which("slurmctld") is None or shutil.which("sbatch") is None:
        if os.environ.get("REQUIRE_SLURM") == "1":
            pytest.fail(
                "slurm-wlm is not installed and REQUIRE_SLURM=1 (scripts/slurm-local install)"
            )
        pytest.skip("slurm-wlm is not installed (scripts/slurm-local install)")
    state = tmp_path_factory.mktemp("slurm")
    # two stand-in GPUs as a GRES (device files, no CUDA behind them): GPU sweeps are scheduled
    # here as on a GPU cluster, and their jobs meet a node that cannot train on a GPU
    env = {**os.environ, "SLURM_LOCAL_DIR": str(state), "SLURM_LOCAL_PORT": str(_free_port_pair()),
           "SLURM_LOCAL_GPUS": "2"}  # fmt: skip
    started = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True)
    if started.returncode != 0:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True)
        pytest.fail(f"scripts/slurm-local start failed:\n{started.stdout}\n{started.stderr}")
    env["SLURM_CONF"] = str(state / "slurm.conf")
    env["WANDB_MODE"] = "disabled"
    yield env
    subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True)


def _train(
    env: dict, *args: str, cache: Path, **kw
) -> subprocess.Popen | subprocess.CompletedProcess:
    multirun = ["-m"] if "-m" in args else []  # before the overrides, as on a command line
    args = tuple(a for a in args if a != "-m")
    cmd = [
        sys.executable,
        "-m",
        "medmtl.cli.train",
        *multirun,
        *TINY,
        f"paths.cache_dir={cache}",
        *args,
    ]
    if kw.get("background"):
        return subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _running_job(env: dict, timeout: float = 120) -> str:
    """The id of the (only) running job of the cluster."""
    end = time.time() + timeout
    while time.time() < end:
        out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], env=env,
                             capture_output=True, text=True).stdout.split()  # fmt: skip
        if out:
            return out[0]
        time.sleep(0.5)
    raise AssertionError("no job started running")


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < end, f"{path} did not appear"
        time.sleep(0.5)


def test_sweep_through_slurm_matches_the_local_sweep(slurm_env, tmp_path, cache_dir):
    """Every job through SLURM (one array), the same results as the local launcher, the
    after-sweep ensemble and medmtl-tables on the folder, and no sacct noise."""
    ensemble = "+hydra.callbacks.ensemble._target_=medmtl.workflows.ensemble.EnsembleAfterSweep"
    sweep = tmp_path / "slurm"
    res = _train(slurm_env, "-m", *LAUNCH, "seed=0,1", ensemble, f"hydra.sweep.dir={sweep}",
                 cache=cache_dir)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    local = tmp_path / "local"
    res_local = _train(slurm_env, "-m", "seed=0,1", f"hydra.sweep.dir={local}", cache=cache_dir)
    assert res_local.returncode == 0, res_local.stderr[-3000:]
    # the jobs ran as SLURM array tasks: one submission, logs per task
    tasks = sorted(
        p.name for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name)
    )
    assert len(tasks) == 2 and len({t.split("_")[0] for t in tasks}) == 1, tasks
    for job in ("0", "1"):
        got, want = _metrics(sweep / job), _metrics(local / job)
        assert got["test/seg_dice"] == pytest.approx(want["test/seg_dice"], abs=1e-6)
        assert got["test/cls_acc"] == pytest.approx(want["test/cls_acc"], abs=1e-6)
    assert "ensemble/size" in _metrics(sweep / "ensemble")
    assert "Bypassing sacct error" not in res.stderr + res.stdout
    tables = run_cli("tables", str(sweep), timeout=300, env=slurm_env)
    assert tables.returncode == 0, tables.stderr[-2000:]
    assert "2/2" in (sweep / "tables" / "runs.md").read_text()


def test_failed_and_killed_jobs_get_failed_json_and_the_sweep_exits_1(
    slurm_env, tmp_path, cache_dir
):
    """A job that fails in Python and one that SLURM kills: each gets failed.json with its
    SLURM job id, state and log tail; medmtl-train names both and exits 1."""
    sweep = tmp_path / "sweep"
    proc = _train(slurm_env, "-m", *LAUNCH, "trainer.max_epochs=200",
                  "callbacks.early_stopping.patience=1000", "data.batch_size=8,-1",
                  f"hydra.sweep.dir={sweep}", cache=cache_dir, background=True)  # fmt: skip
    _wait_for(sweep / "0" / "checkpoints" / "last.ckpt", proc)  # job 0 trains (the long one)
    job = _running_job(slurm_env)
    subprocess.run(["scancel", job], env=slurm_env, check=True)
    _out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err[-3000:]
    assert re.search(r"2 sweep job\(s\) failed: .*/0, .*/1", err), err[-2000:]
    killed = json.loads((sweep / "0" / "failed.json").read_text())
    assert killed["type"] == "SlurmJobEnded"
    assert killed["slurm"]["job_id"] == job and killed["slurm"]["state"] == "CANCELLED"
    log = Path(killed["slurm"]["stderr"]).read_text().splitlines()
    assert killed["slurm"]["log_tail"].splitlines() == log[-slurm.LOG_TAIL_LINES :]
    refused = json.loads((sweep / "1" / "failed.json").read_text())
    assert refused["type"] == "ConfigError" and "data.batch_size=-1" in refused["error"]
    assert re.fullmatch(r"\d+_1", refused["slurm"]["job_id"])
    assert "data.batch_size=-1" in refused["slurm"]["log_tail"]
    assert not (sweep / "0" / "metrics.json").exists()


def test_a_requeued_job_resumes_in_its_run_folder(slurm_env, tmp_path, cache_dir):
    """Pre-emption as SLURM does it (SIGTERM, then submitit's USR2: checkpoint and requeue):
    the job starts again, resumes from last.ckpt in the same folder, logs each epoch once."""
    sweep = tmp_path / "sweep"
    epochs = 6
    proc = _train(slurm_env, "-m", *LAUNCH, f"trainer.max_epochs={epochs}",
                  "callbacks.early_stopping.patience=1000", "seed=0", f"hydra.sweep.dir={sweep}",
                  cache=cache_dir, background=True)  # fmt: skip
    run = sweep / "0"
    _wait_for(run / "checkpoints" / "last.ckpt", proc)
    job = _running_job(slurm_env)
    for sig in ("SIGTERM", "USR2"):  # what submitit's own preemption test sends
        subprocess.run(["scancel", job, "--signal", sig], env=slurm_env, check=True)
    # SLURM holds a requeued job for a while (BeginTime); an administrator may release it
    end = time.time() + 120
    while "BeginTime" not in subprocess.run(["squeue", "-h", "-j", job, "-o", "%r"], env=slurm_env,
                                            capture_output=True, text=True).stdout:  # fmt: skip
        assert time.time() < end and proc.poll() is None, "the job was not requeued"
        time.sleep(0.5)
    subprocess.run(
        ["scontrol", "update", f"JobId={job}", "StartTime=now"], env=slurm_env, check=True
    )
    _out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    metrics = _metrics(run)
    assert metrics["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
    assert metrics["epochs"] == epochs
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    val_epochs = [int(r["epoch"]) for r in rows if r.get("val/overall")]
    # one validation per epoch, then the final one after training (epoch == max_epochs)
    assert val_epochs == [*range(epochs), epochs]
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == [
        "0",
        "multirun.yaml",
    ]  # the restarted job wrote into the same folder, no second one
    # SLURM's log keeps the first attempt (the launcher opens it in append mode), the run's
    # own log says it resumed, once
    (log_file,) = (sweep / ".submitit").glob("*/*_0_log.err")
    assert "this job is preempted" in log_file.read_text()
    assert (run / "train.log").read_text().count("SLURM requeued this job: resuming") == 1


def test_ddp_over_srun_one_rank_per_task(slurm_env, tmp_path, cache_dir):
    """trainer=ddp_cpu with two SLURM tasks: Lightning's SLURM environment, two ranks, one run
    folder, the same metrics as the local two-process DDP run."""
    sweep = tmp_path / "sweep"
    ddp = ["trainer=ddp_cpu", "trainer.max_epochs=2", "seed=0", "trainer.precision=auto"]
    res = _train(slurm_env, "-m", *LAUNCH, "hydra.launcher.tasks_per_node=2",
                 "hydra.launcher.cpus_per_task=1", *ddp, f"hydra.sweep.dir={sweep}",
                 cache=cache_dir)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    got = _metrics(sweep / "0")
    assert got["trainer/world_size"] == 2
    assert got["trainer/cluster_environment"] == "SLURMEnvironment"
    assert len(list((sweep / ".submitit").glob("*/*_[01]_log.err"))) == 2  # one log per task
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == [
        "0",
        "multirun.yaml",
    ]
    local = tmp_path / "local"
    res_local = _train(slurm_env, *ddp, f"hydra.run.dir={local}", cache=cache_dir)
    assert res_local.returncode == 0, res_local.stderr[-3000:]
    want = _metrics(local)
    assert want["trainer/cluster_environment"] == "LightningEnvironment"
    # precision=auto does not time a step per rank (ranks under load could choose differently)
    assert got["trainer/precision"] == want["trainer/precision"] == "32-true"
    for key in ("test/seg_dice", "test/cls_acc", "val/overall"):
        assert got[key] == pytest.approx(want[key], abs=1e-4), key


@pytest.mark.parametrize(
    ("ask", "said", "fix"),
    [
        # more GPUs than the node has
        ("hydra.launcher.gpus_per_node=3", "node configuration is not available",
         "hydra.launcher.cpus_per_task, mem_gb or gpus_per_node"),
        # a generic resource the cluster does not have (a GPU request on a CPU cluster)
        ("+hydra.launcher.additional_parameters.gres=tpu:1", "Invalid generic resource (gres)",
         "hydra/launcher=slurm_cpu"),
    ],
)  # fmt: skip
def test_a_refused_submission_is_one_line(slurm_env, tmp_path, cache_dir, ask, said, fix):
    """sbatch's reason and the setting to change, exit 2, no job folder."""
    sweep = tmp_path / "sweep"
    res = _train(slurm_env, "-m", "hydra/launcher=slurm_gpu", "hydra.launcher.cpus_per_task=1",
                 "hydra.launcher.mem_gb=2", ask, "seed=0", f"hydra.sweep.dir={sweep}",
                 cache=cache_dir)  # fmt: skip
    assert res.returncode == 2
    errors = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert errors[-1].startswith("medmtl: error: SLURM refused the sweep's jobs")
    assert said in errors[-1] and fix in errors[-1], errors[-1]
    assert "Traceback" not in res.stderr
    assert not (sweep / "0").exists()


def test_a_gpu_sweep_submitted_from_a_cpu_node(slurm_env, tmp_path, cache_dir):
    """profile=gpu with hydra/launcher=slurm_gpu from this GPU-less machine: accepted (the GPU
    is not checked where the sweep is submitted); every job asks SLURM for a GPU, gets one
    (CUDA_VISIBLE_DEVICES), and fails in its own failed.json naming the node, since no CUDA is
    behind the stand-in GPUs; the sweep exits 1 after both jobs."""
    sweep = tmp_path / "gpu"
    res = _train(slurm_env, "-m", "profile=gpu", "hydra/launcher=slurm_gpu",
                 "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
                 "model/encoder=efficientnet_lite0,resnet18", f"hydra.sweep.dir={sweep}",
                 cache=cache_dir)  # fmt: skip
    assert res.returncode == 1, res.stderr[-3000:]
    assert "no usable GPU" not in res.stderr.split("Submitit 'slurm' sweep")[0]
    node = socket.gethostname()
    for job in ("0", "1"):
        failed = json.loads((sweep / job / "failed.json").read_text())
        assert failed["error"].startswith("trainer.accelerator=gpu: node "), failed["error"]
        assert f"node {node} has no usable GPU" in failed["error"]
        assert "CUDA_VISIBLE_DEVICES=" in failed["error"]
        assert f"SLURM job {failed['slurm']['job_id']} ran there" in failed["error"]
        assert "\n" not in failed["error"] and "Traceback" not in failed["error"]
        shown = subprocess.run(["scontrol", "show", "job", failed["slurm"]["job_id"]],
                               env=slurm_env, capture_output=True, text=True).stdout  # fmt: skip
        assert re.search(r"TresPerNode=gres[:/]gpu[:=]1", shown), shown


def test_no_cluster_is_one_line(slurm_env, tmp_path, cache_dir):
    """hydra/launcher=slurm_gpu where no controller answers SLURM's commands: one line, exit 2,
    no folder, no traceback (SLURM's commands missing: test_absent_services, in-process)."""
    # a cluster whose controller does not answer (nothing listens on its port); a missing
    # slurm.conf says the same after sinfo's 60 s of retries
    closed = tmp_path / "closed.conf"
    closed.write_text("ClusterName=gone\nSlurmctldHost=localhost\nSlurmctldPort=1\n")
    cases = [({**slurm_env, "SLURM_CONF": str(closed)}, "Unable to contact slurm controller")]
    for env, said in cases:
        sweep = tmp_path / "sweep"
        res = _train(env, "-m", "profile=gpu", "hydra/launcher=slurm_gpu", "seed=0",
                     f"hydra.sweep.dir={sweep}", cache=cache_dir)  # fmt: skip
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("medmtl: error:")]
        assert res.returncode == 2 and len(errors) == 1, res.stderr[-2000:]
        assert "no SLURM cluster answers from here" in errors[0] and said in errors[0], errors
        assert "Traceback" not in res.stderr and not sweep.exists()


# ---------------------------------------------------------------- without a cluster


@pytest.mark.parametrize(
    ("said", "fix"),
    [
        ("sbatch: error: Invalid generic resource (gres) specification", "slurm_cpu"),
        ("sbatch: error: invalid partition specified: gpu", "hydra.launcher.partition"),
        ("sbatch: error: Memory specification can not be satisfied", "hydra.launcher.mem_gb"),
        (
            "sbatch: error: Invalid account or account/partition combination",
            "hydra.launcher.account",
        ),
        ("sbatch: error: Requested time limit is invalid", "hydra.launcher.timeout_min"),
        ("sbatch: error: something new", "hydra.launcher.*"),
    ],
)
def test_submission_error_names_the_setting(said, fix):
    msg = str(slurm.submission_error(f"some output\n{said}\n"))
    assert said in msg and fix in msg and "\n" not in msg


def test_submission_checks_values_and_notes_node_paths(make_cfg, monkeypatch):
    """A sweep sent to a cluster: the paths its jobs read on their nodes (the data folder, a
    teacher) may be missing here, which is a note each and no refusal (the values pass, the
    machine is not checked); a cluster that does not answer is refused."""
    from medmtl.errors import ConfigError
    from medmtl.workflows.build import check_train_values

    cfg = make_cfg(["data=folder", "data.root=/nonexistent/busi",
                    "distill.teacher=/nonexistent/teacher"])  # fmt: skip
    check_train_values(cfg)  # a teacher that is not here is not a wrong value
    monkeypatch.setattr(slurm, "cluster_problem", lambda: None)
    notes = slurm.check_submission(cfg)
    assert notes == [
        "data.root=/nonexistent/busi is not on this machine; each job looks for it on its node",
        "distill.teacher=/nonexistent/teacher is not on this machine; each job looks for it on "
        "its node",
    ]
    monkeypatch.setattr(slurm, "cluster_problem", lambda: "no SLURM cluster answers from here")
    with pytest.raises(ConfigError, match="no SLURM cluster answers from here"):
        slurm.check_submission(cfg)


def test_requeued_checkpoint_only_for_a_restarted_unfinished_run(tmp_path, monkeypatch):
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"x")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert slurm.requeued_checkpoint(tmp_path) is None  # first start: a fresh run
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert slurm.requeued_checkpoint(tmp_path) == last
    (tmp_path / "metrics.json").write_text("{}")
    assert slurm.requeued_checkpoint(tmp_path) is None  # finished: nothing to resume
    (tmp_path / "metrics.json").unlink()
    last.unlink()
    assert slurm.requeued_checkpoint(tmp_path) is None  # killed before its first epoch


def test_record_job_outcome_keeps_a_jobs_own_reason(tmp_path):
    class Paths:
        stderr = tmp_path / "x_log.err"
        stdout = tmp_path / "x_log.out"

    class Watcher:
        def get_state(self, job_id, mode):
            return "FAILED"

    class Job:
        job_id, paths, watcher = "12_3", Paths(), Watcher()

    Paths.stderr.write_text("\n".join(f"line {i}" for i in range(100)))
    assert slurm.record_job_outcome(tmp_path, Job(), None) is False  # finished, nothing failed
    assert not (tmp_path / "failed.json").exists()
    (tmp_path / "failed.json").write_text(json.dumps({"error": "own reason", "type": "DataError"}))
    assert slurm.record_job_outcome(tmp_path, Job(), None) is True
    rec = json.loads((tmp_path / "failed.json").read_text())
    assert rec["error"] == "own reason" and rec["slurm"]["job_id"] == "12_3"
    assert rec["slurm"]["log_tail"].splitlines() == [f"line {i}" for i in range(60, 100)]


@pytest.mark.parametrize(
    "state, done",
    [("REQUEUE_HOLD", False), ("SIGNALING", False), ("REQUEUED", False), ("PENDING", False),
     ("RUNNING", False), ("COMPLETED", True), ("CANCELLED", True), ("FAILED", True)],
)  # fmt: skip
def test_the_squeue_watcher_waits_through_passing_states(state, done):
    """A requeued job passes through states submitit does not list as unfinished; read from
    squeue, they must not end the job (its run would be recorded as failed, then restart)."""
    watcher = slurm.squeue_watcher(delay_s=3600)
    watcher.register_job("42")
    watcher._info_dict.update(watcher.read_info(f"42|{state}|node1\n"))
    watcher._last_status_check = time.time()  # nothing to ask squeue for
    assert watcher.get_state("42", mode="cache") == state
    assert watcher.is_done("42", mode="cache") is done

"""Sweeps through SLURM: hydra-submitit-launcher with medmtl's sweep contract.

What the launcher plugin (``hydra_plugins.medmtl_slurm``, config ``hydra/launcher=slurm_cpu``
or ``slurm_gpu``) adds to hydra-submitit-launcher:

- a refused submission (``sbatch: error: ...``) is one line naming the setting to change,
  not a traceback;
- a job that SLURM ends without a result (out of memory, time limit, cancelled, node failure)
  gets the ``failed.json`` a job that fails in Python writes for itself, and both carry the
  SLURM job id, its state and the tail of its log; the sweep goes on and ``medmtl-train``
  exits 1 at the end, as with the local launcher;
- job states come from ``sacct`` and, on a cluster without accounting (``Slurm accounting
  storage is disabled``), from ``squeue`` (which lists finished jobs for ``MinJobAge``), said
  once instead of a warning on every poll.

A requeued job (pre-emption, or submitit's requeue before the time limit) continues from its
run folder's ``checkpoints/last.ckpt`` (:func:`requeued_checkpoint`, called by
:func:`medmtl.workflows.train.train`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medmtl.errors import ConfigError
from medmtl.reporting.summary import write_json

log = logging.getLogger("medmtl")

LOG_TAIL_LINES = 40
# what a refused submission says -> the launcher setting that fixes it
_HINTS = {
    "node configuration": "no node of the partition has what one job asks for: lower "
    "hydra.launcher.cpus_per_task, mem_gb or gpus_per_node (sinfo -o '%P %n %c %m %G' lists "
    "each node's CPUs, memory and GPUs)",
    "gres": "this cluster has no such generic resource (GPUs): on a CPU cluster use "
    "hydra/launcher=slurm_cpu, or hydra.launcher.gpus_per_node=null",
    # before "partition": SLURM says "Invalid account or account/partition combination"
    "account": "set hydra.launcher.account=<your account> (sacctmgr show assoc user=$USER)",
    "partition": "set hydra.launcher.partition=<one of sinfo's partitions>",
    "memory": "lower hydra.launcher.mem_gb (sinfo -o '%n %m' gives each node's memory in MB)",
    "qos": "set hydra.launcher.qos=<a QOS your account may use>",
    "time limit": "lower hydra.launcher.timeout_min to the partition's limit (sinfo -o '%P %l')",
}


# launchers (hydra.launcher._target_, a part of it) whose jobs run on other machines
REMOTE_LAUNCHERS = ("medmtl_slurm", "submitit")


def sends_jobs_elsewhere(cfg: Any) -> bool:
    """Whether a composed config (with its ``hydra`` node) is a sweep whose launcher runs the
    jobs on other machines: then what depends on the machine is checked inside each job."""
    from omegaconf import OmegaConf

    mode = str(OmegaConf.select(cfg, "hydra.mode") or "")  # None: not a Hydra run
    target = str(OmegaConf.select(cfg, "hydra.launcher._target_") or "")
    return mode.endswith("MULTIRUN") and any(name in target for name in REMOTE_LAUNCHERS)


def cluster_problem() -> str | None:
    """Why no SLURM sweep can be submitted from here, else None: SLURM's commands missing, or
    no controller answering them (``sinfo``)."""
    missing = [cmd for cmd in ("sbatch", "srun", "sinfo") if shutil.which(cmd) is None]
    if missing:
        why = f"{' and '.join(missing)} not found"
    else:
        try:
            done = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True,
                                  timeout=60)  # fmt: skip
        except subprocess.TimeoutExpired:
            done = None
        if done is not None and done.returncode == 0:
            return None
        said = [ln.strip() for ln in (done.stderr if done else "").splitlines() if ln.strip()]
        last = said[-1] if said else "its controller did not answer in 60 s"
        why = last if last.startswith("sinfo") else f"sinfo: {last}"
    return (
        f"hydra/launcher=slurm_*: no SLURM cluster answers from here ({why}); submit from a login "
        "node of the cluster (or set SLURM_CONF to its slurm.conf), or leave out hydra/launcher "
        "to run the sweep on this machine"
    )


# paths a job reads on its node; the submitting machine need not have them
NODE_PATHS = ("data.root", "distill.teacher")


def check_submission(cfg: Any) -> list[str]:
    """What a sweep sent to a cluster is checked for where it is submitted, besides its values:
    a cluster that answers (else :class:`ConfigError`). Returns notes on the paths of
    :data:`NODE_PATHS` this machine does not have (each job looks for them on its node)."""
    from omegaconf import OmegaConf

    problem = cluster_problem()
    if problem:
        raise ConfigError(problem + ".")
    notes = []
    for key in NODE_PATHS:
        value = OmegaConf.select(cfg, key, default=None)
        if value and not Path(str(value)).exists():
            notes.append(f"{key}={value} is not on this machine; each job looks for it on its node")
    return notes


def submission_error(stderr: str) -> ConfigError:
    """One line for a submission SLURM refused, with the launcher setting that fixes it."""
    lines = [ln.strip() for ln in str(stderr).splitlines() if ln.strip()]
    said = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "")
    hint = next((h for key, h in _HINTS.items() if key in said.lower()), None)
    return ConfigError(
        f"SLURM refused the sweep's jobs ({said}); "
        + (hint or "check the hydra.launcher.* settings (docs/studies.md, SLURM)")
        + "."
    )


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def slurm_record(job: Any) -> dict[str, Any]:
    """What SLURM says about a finished submitit ``job``: id, state, log files, log tail."""
    paths = job.paths
    tail = _tail(paths.stderr) or _tail(paths.stdout)
    return {
        "job_id": str(job.job_id),
        "state": str(job.watcher.get_state(job.job_id, mode="force")),
        "stderr": str(paths.stderr),
        "stdout": str(paths.stdout),
        "log_tail": tail,
    }


def record_job_outcome(folder: Path, job: Any, error: BaseException | None) -> bool:
    """After a job ended: write or complete ``folder/failed.json``; True when the job failed.

    A job that failed in Python wrote ``failed.json`` itself (:func:`record_failure`): the SLURM
    fields are added. A job that ended without a result (``error`` from submitit) gets one.
    """
    failed = folder / "failed.json"
    if error is None and not failed.exists():
        return False
    record: dict[str, Any] = {}
    if failed.exists():
        try:
            record = json.loads(failed.read_text())
        except (OSError, ValueError):
            record = {}
    slurm = slurm_record(job)
    if not record:
        record = {
            "error": f"SLURM job {slurm['job_id']} ended without a result (state "
            f"{slurm['state']}); the tail of its log is in failed.json",
            "type": "SlurmJobEnded",
            "traceback": str(error or ""),
        }
    record["slurm"] = slurm
    write_json(failed, record)
    return True


def job_folder(config: Any, hydra_context: Any, overrides: Sequence[str], num: int) -> Path:
    """The run folder Hydra gives sweep job ``num`` (``hydra.sweep.dir``/``hydra.sweep.subdir``)."""
    from omegaconf import open_dict

    cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(cfg.hydra.job):
        cfg.hydra.job.num = num
        cfg.hydra.job.id = f"job_id_for_{num}"
    return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)


def requeued_checkpoint(output_dir: str | Path) -> Path | None:
    """``last.ckpt`` of a run folder when this process is a requeued SLURM job that did not
    finish its run: SLURM counts the restarts in ``SLURM_RESTART_COUNT``."""
    try:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        restarts = 0
    run = Path(output_dir)
    last = run / "checkpoints" / "last.ckpt"
    if restarts < 1 or (run / "metrics.json").exists() or not last.exists():
        return None
    return last


# job states squeue reports on the way to another one (squeue(1), JOB STATE CODES); a job in
# one of them has not ended, whatever submitit's list of unfinished states says
SQUEUE_PASSING = frozenset({
    "CONFIGURING", "COMPLETING", "REQUEUE_FED", "REQUEUE_HOLD", "REQUEUED", "RESIZING",
    "SIGNALING", "STAGE_OUT", "STOPPED", "SUSPENDED", "PENDING", "RUNNING", "PREEMPTED",
})  # fmt: skip


def install_queue_watcher() -> bool:
    """Make submitit's SLURM jobs poll ``squeue`` where ``sacct`` cannot answer; True if so.

    A cluster without accounting storage (one node, a test machine) answers every ``sacct``
    with an error: submitit then logs a warning per poll and never learns that a job was
    killed. ``squeue --states=all`` lists the jobs the controller still holds (finished ones
    for ``MinJobAge`` seconds) in the same ``JobID|State|NodeList`` form.
    """
    from submitit.slurm.slurm import SlurmJob

    if _sacct_works():
        return False
    log.info(
        "sacct cannot answer on this cluster (no accounting storage): job states come from squeue"
    )
    SlurmJob.watcher = squeue_watcher(delay_s=60)
    return True


def squeue_watcher(delay_s: int = 60) -> Any:
    """submitit's SLURM job watcher asking ``squeue --states=all`` instead of ``sacct``."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueWatcher(SlurmInfoWatcher):
        def _make_command(self) -> list[str] | None:
            command = super()._make_command()
            if command is None:
                return None
            jobs = [command[i + 1] for i, arg in enumerate(command) if arg == "-j"]
            return ["squeue", "--states=all", "--noheader", "-o", "%i|%T|%N",
                    "-j", ",".join(jobs)]  # fmt: skip

        def read_info(self, string: bytes | str) -> dict:
            text = string.decode() if isinstance(string, bytes) else string
            return super().read_info("JobID|State|NodeList\n" + text)

        def is_done(self, job_id: str, mode: str = "standard") -> bool:
            # squeue also shows the passing states sacct rarely does (a requeued job is
            # REQUEUE_HOLD or SIGNALING for a moment): submitit would take them for an end
            state = self.get_state(job_id, mode=mode).upper()
            return state not in SQUEUE_PASSING and super().is_done(job_id, mode="cache")

    return SqueueWatcher(delay_s=delay_s)


def _sacct_works() -> bool:
    try:
        subprocess.run(["sacct", "-n", "-X", "-j", "1"], check=True, capture_output=True,
                       timeout=30)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return True

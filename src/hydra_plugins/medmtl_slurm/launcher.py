"""hydra-submitit-launcher's SLURM launcher with medmtl's sweep contract.

Kept thin: Hydra finds launchers only in the ``hydra_plugins`` package; what it does is in
:mod:`medmtl.workflows.slurm`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class MedmtlSlurmLauncher(SlurmLauncher):
    """Submit the sweep as a job array; a refused submission is one line, a job SLURM ends
    without a result gets ``failed.json`` (with its job id and log tail) and the sweep goes on."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import submitit

        from medmtl.workflows import slurm

        problem = slurm.cluster_problem()  # submitit's own report is a traceback
        if problem:
            print(f"medmtl: error: {problem}.", file=sys.stderr)
            sys.exit(2)
        slurm.install_queue_watcher()
        submitted: list[Any] = []
        original = submitit.AutoExecutor.map_array

        def map_array(executor: Any, fn: Any, *iterables: Any) -> list[Any]:
            try:
                jobs = original(executor, fn, *iterables)
            except submitit.core.utils.FailedJobError as exc:  # sbatch said no: one line, exit 2
                print(f"medmtl: error: {slurm.submission_error(exc)}", file=sys.stderr)
                sys.exit(2)
            submitted.extend(jobs)
            # the base class would raise on the first job SLURM killed: it gets stand-ins, and
            # launch() below collects each job itself
            return [_DEFERRED] * len(jobs)

        submitit.AutoExecutor.map_array = map_array
        try:
            super().launch(job_overrides, initial_job_idx)
        finally:
            submitit.AutoExecutor.map_array = original
        returns = []
        for num, (job, overrides) in enumerate(
            zip(submitted, job_overrides, strict=True), initial_job_idx
        ):
            folder = slurm.job_folder(self.config, self.hydra_context, overrides, num)
            try:
                ret = job.results()[0]
                error = None
            except (
                submitit.core.utils.UncompletedJobError,
                submitit.core.utils.FailedJobError,
            ) as exc:
                ret, error = None, exc
            slurm.record_job_outcome(folder, job, error)
            if ret is None:  # killed by SLURM: a completed job with no value, like a failed one
                ret = JobReturn(overrides=list(overrides), working_dir=str(folder),
                                status=JobStatus.COMPLETED, _return_value=None)  # fmt: skip
            returns.append(ret)
        return returns


class _Deferred:
    """A job's stand-in for the base launcher, which only reads ``results()[0]``."""

    def results(self) -> list[None]:
        return [None]


_DEFERRED = _Deferred()

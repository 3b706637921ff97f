"""Launchers of the sweep's tasks: one after another in this process, or one submitit array job on Slurm.

`run_local` runs tasks in order; `run_slurm` submits them as one array job (a task requeues itself on
timeout or preemption and resumes from its checkpoint) and waits for them. Both return
`{task name: result or the exception it raised}`, so one failed run never loses the others.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from gssm_jax.errors import UserError
from gssm_jax.experiment1.plan import SweepError

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Task:
    """A named call `function(*args)`; picklable when `function` is a module-level function."""

    name: str
    function: Callable[..., Any]
    args: tuple

    def __call__(self) -> Any:
        return self.function(*self.args)


def _progress(log: Log, index: int, total: int, name: str, start: float, message: str) -> None:
    elapsed = time.time() - start
    remaining = elapsed / index * (total - index) if index else math.nan
    log(f"[{index}/{total}] {name}: {message} (elapsed {elapsed:.0f} s, about {remaining:.0f} s left)")


def run_local(tasks: Sequence[Task], log: Log = print) -> dict[str, Any]:
    """Runs `tasks` one after another; returns `{name: result or the exception it raised}`."""
    outcomes: dict[str, Any] = {}
    start = time.time()
    for index, task in enumerate(tasks):
        log(f"[{index + 1}/{len(tasks)}] {task.name}: starting")
        try:
            outcomes[task.name] = task()
            status = "done"
        except Exception as error:  # noqa: BLE001 (one failed run must not lose the others; reported at the end)
            outcomes[task.name] = error
            status = f"FAILED: {type(error).__name__}: {error}"
        _progress(log, index + 1, len(tasks), task.name, start, status)
    return outcomes


# ---- Slurm ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """Resources of each Slurm job (one run or one calibration per job, one node, one process seeing all GPUs).

    Attributes:
      partition: Slurm partition (None: the cluster's default).
      time_minutes: wall-time limit per job; a job that reaches it is requeued and resumes from its checkpoint.
      gpus_per_node: GPUs per job (the run is data-parallel over all of them).
      cpus_per_task: CPU cores per job.
      max_parallel: most array tasks running at once.
      cluster: "slurm"; "local" or "debug" run the same submitit code path without a cluster (tests).
      poll_seconds: how often job states are checked while waiting.
    """

    partition: str | None = None
    time_minutes: int = 240
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    max_parallel: int = 64
    cluster: str = "slurm"
    poll_seconds: float = 30.0


def slurm_parameters(options: SlurmOptions, name: str = "experiment1") -> dict[str, Any]:
    """Keyword arguments of `submitit.AutoExecutor.update_parameters` for `options`."""
    if options.time_minutes <= 0 or options.gpus_per_node < 0 or options.max_parallel < 1:
        raise UserError(f"need slurm time_minutes > 0, gpus_per_node >= 0 and max_parallel >= 1; got {options}")
    parameters = {"name": name, "timeout_min": options.time_minutes, "nodes": 1, "tasks_per_node": 1,
                  "gpus_per_node": options.gpus_per_node, "cpus_per_task": options.cpus_per_task,
                  "slurm_array_parallelism": options.max_parallel}
    if options.partition:
        parameters["slurm_partition"] = options.partition
    return parameters


def make_executor(folder: str, options: SlurmOptions, name: str = "experiment1") -> Any:
    """A `submitit.AutoExecutor` writing its job files under `folder`, with `slurm_parameters(options)`."""
    import submitit  # noqa: PLC0415 (optional dependency: pip install gssm_jax[slurm])

    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster)
    except RuntimeError as error:
        raise SweepError(f"cannot submit to {options.cluster!r}: {error} (run on a Slurm login node, or drop "
                         f"--launcher=slurm)") from None
    executor.update_parameters(**slurm_parameters(options, name))
    return executor


@dataclasses.dataclass(frozen=True)
class RequeueingTask(Task):
    """A Task that submitit requeues (same arguments) when its job times out or is preempted."""

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit  # noqa: PLC0415

        return submitit.helpers.DelayedSubmission(self)


def run_slurm(tasks: Sequence[Task], folder: str, options: SlurmOptions, log: Log = print) -> dict[str, Any]:
    """Submits `tasks` as one array job and waits; returns `{name: result or the job's exception}`."""
    import submitit  # noqa: PLC0415

    if not tasks:
        return {}
    executor = make_executor(folder, options)
    with executor.batch():
        jobs = [executor.submit(RequeueingTask(task.name, task.function, task.args)) for task in tasks]
    names = {id(job): task.name for job, task in zip(jobs, tasks, strict=True)}
    log(f"submitted {len(jobs)} jobs ({jobs[0].job_id} ...), logs in {folder}; waiting")
    outcomes: dict[str, Any] = {}
    start = time.time()
    for index, job in enumerate(submitit.helpers.as_completed(jobs, poll_frequency=options.poll_seconds)):
        name = names[id(job)]
        error = job.exception()
        outcomes[name] = job.result() if error is None else error
        status = "done" if error is None else f"FAILED: {type(error).__name__} (see {job.paths.stderr})"
        _progress(log, index + 1, len(jobs), name, start, status)
    return outcomes


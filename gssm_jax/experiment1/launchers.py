"""Launchers of the sweep's tasks: here (in this process or a few worker processes), or one submitit array job.

`run_local` runs tasks in order in this process, or `workers` at a time in fresh worker processes (spawned, so
each starts its own JAX runtime); `run_slurm` submits them as one array job (a task requeues itself on timeout
or preemption and resumes from its checkpoint) and waits for them. Both return `{task name: result or the
exception it raised}`, so one failed task never loses the others. A task that trains several runs (an
ensemble) returns `{run name: result or exception}`, and the progress log gives one line per run.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from gssm_jax.errors import UserError
from gssm_jax.experiment1.plan import SweepError

Log = Callable[[str], None]
# glibc reads its tunables once, when a process starts, so only processes the sweep starts can get them: malloc
# backed by transparent huge pages spares XLA:CPU's per-step temporaries a page fault per 4 KiB (docs/speed.md).
# Measured at size=cpu on 2 cores: the same sweep 4% faster (benchmarks/RESULTS.md, "Sweep"), identical numbers.
# Other C libraries ignore the variable; a value the user set is kept.
TUNABLES, HUGE_PAGES = "GLIBC_TUNABLES", "glibc.malloc.hugetlb=1"


@dataclasses.dataclass(frozen=True)
class Task:
    """A named call `function(*args)`; picklable when `function` is a module-level function."""

    name: str
    function: Callable[..., Any]
    args: tuple

    def __call__(self) -> Any:
        return self.function(*self.args)


EXCESS = "eval/excess_loss_nats_per_token"


class RunOutcomes(dict):
    """What a task that trains several runs returns: `{run name: its result or the exception it raised}`."""


def describe(outcome: Any) -> str:
    """One status line: "done", "excess 0.1234 nats/token" for a training result, or the failure."""
    if isinstance(outcome, Exception):
        return f"FAILED: {type(outcome).__name__}: {outcome}"
    if isinstance(outcome, dict) and EXCESS in outcome:
        return f"excess {outcome[EXCESS]:.4f} nats/token"
    return "done"


def _progress(log: Log, index: int, total: int, name: str, start: float, outcome: Any) -> None:
    elapsed = time.time() - start
    remaining = elapsed / index * (total - index) if index else math.nan
    lines = [f"{run}: {describe(result)}"
             for run, result in (outcome if isinstance(outcome, RunOutcomes) else {name: outcome}).items()]
    lines[-1] += f" (elapsed {elapsed:.0f} s, about {remaining:.0f} s left)"
    for line in lines:
        log(f"[{index}/{total}] {line}")


def _call(task: Task) -> Any:
    """`task()`, or the exception it raised (one failed run must not lose the others; reported at the end)."""
    try:
        return task()
    except Exception as error:  # noqa: BLE001
        return error


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[concurrent.futures.Executor | None]:
    """`workers` spawned worker processes (a forked JAX runtime is unsafe) for `run_local`, kept for every stage of
    a sweep so that each process imports the library and compiles a program once; None for `workers` <= 1."""
    if workers <= 1:
        yield None
        return
    context = multiprocessing.get_context("spawn")
    # The pool starts its processes on demand, so the environment they inherit is kept for the pool's lifetime.
    with worker_environment(), concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield pool


@contextlib.contextmanager
def worker_environment() -> Iterator[None]:
    """`os.environ` as the worker processes started inside the block inherit it (`HUGE_PAGES`), restored on exit."""
    if TUNABLES in os.environ:
        yield
        return
    os.environ[TUNABLES] = HUGE_PAGES
    try:
        yield
    finally:
        del os.environ[TUNABLES]


def run_local(tasks: Sequence[Task], log: Log = print, pool: concurrent.futures.Executor | None = None
              ) -> dict[str, Any]:
    """Runs `tasks` here, one after another, or in the worker processes of `pool` (`worker_pool`).

    Returns:
      `{name: result or the exception it raised}`, in the order the tasks finished.
    """
    outcomes: dict[str, Any] = {}
    start = time.time()
    if pool is None or len(tasks) <= 1:
        for index, task in enumerate(tasks):
            outcomes[task.name] = _call(task)
            _progress(log, index + 1, len(tasks), task.name, start, outcomes[task.name])
        return outcomes
    futures = {pool.submit(_call, task): task.name for task in tasks}
    for index, future in enumerate(concurrent.futures.as_completed(futures)):
        name = futures[future]
        try:
            outcomes[name] = future.result()
        except Exception as error:  # noqa: BLE001 (a worker that died: its task failed, the others go on)
            outcomes[name] = error
        _progress(log, index + 1, len(tasks), name, start, outcomes[name])
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
        _progress(log, index + 1, len(jobs), name, start,
                  outcomes[name] if error is None else RuntimeError(f"{type(error).__name__} (see {job.paths.stderr})"))
    return outcomes


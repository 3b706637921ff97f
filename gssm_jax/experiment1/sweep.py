"""The Experiment 1 sweep: calibrated pairs, one training run per cell, run locally or on Slurm.

A *cell* is (graph family, side, graph seed, model size); its run directory is
`WORKDIR/runs/<graph>/<side>/seed<k>/<model>/` (the run directory format of `gssm_jax.train`).
The free alpha of each side comes from `calibrate_graph`, cached in
`WORKDIR/calibration/<graph>.<measure>.json`. A run whose `result.json` exists is finished and
skipped; any other run is (re)started and `train_and_evaluate` resumes it from its latest checkpoint.
A run directory trained with different settings (e.g. after a calibration change) is an error, so
results of two configurations never mix in one report.

Launchers: `run_local` runs tasks one after another in this process; `run_slurm` submits them as
one submitit array job (a task requeues itself on timeout or preemption and resumes from its
checkpoint) and waits for them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from gssm_jax.model.families import get_family
from gssm_jax.model.graph import GraphSpec
from gssm_jax.training import run_files as metrics

Log = Callable[[str], None]
SIDE_ALPHAS = {"small_alpha_x": ("alpha_X", "alpha_Z"), "small_alpha_z": ("alpha_Z", "alpha_X")}  # (small, free)


class SweepError(RuntimeError):
    """A sweep that cannot continue safely (stale run directories, failed runs); the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of the sweep."""

    graph: str
    side: str
    seed: int
    model: str

    @property
    def name(self) -> str:
        return f"{self.graph}/{self.side}/seed{self.seed}/{self.model}"

    def run_dir(self, workdir: str) -> str:
        return os.path.join(workdir, "runs", self.graph, self.side, f"seed{self.seed}", self.model)


def plan(config: ml_collections.ConfigDict) -> list[Cell]:
    """Every cell of `config.experiment1`, graph-major (graphs x sides x seeds x models)."""
    sweep = config.experiment1
    return [Cell(graph, side, int(seed), model) for graph in sweep.graphs for side in sweep.sides
            for seed in sweep.seeds for model in sweep.models]


def is_finished(run_dir: str) -> bool:
    """A run is finished when its `result.json` exists (training writes it atomically at the end)."""
    return os.path.exists(os.path.join(run_dir, metrics.RESULT_FILE))


# ---- calibration ---------------------------------------------------------------------------------
def calibration_path(workdir: str, graph: str, measure: str) -> str:
    return os.path.join(workdir, "calibration", f"{graph}.{measure}.json")


def calibration_settings(config: ml_collections.ConfigDict, graph: str) -> dict:
    """What a calibration of `graph` depends on (a cache entry is reused only when these are equal)."""
    calibration = config.calibration
    return {"graph": graph, "measure": calibration.measure, "small": calibration.small,
            "seeds": [int(seed) for seed in calibration.seeds], "batch_size": calibration.batch_size,
            "length": calibration.length or config.experiment1.lengths[graph], "tolerance": calibration.tolerance,
            "grid_points": calibration.grid_points, "bounds": [calibration.bounds_low, calibration.bounds_high]}


def calibrate_graph(config: ml_collections.ConfigDict, graph: str, workdir: str, log: Log = print) -> dict:
    """Both sides' alphas of `graph` at equal difficulty, from the cache or computed (`compute_calibration`) and cached.

    Returns:
      the calibration record (see `compute_calibration`).
    """
    settings = calibration_settings(config, graph)
    path = calibration_path(workdir, graph, settings["measure"])
    if os.path.exists(path):
        with open(path) as file:
            cached = json.load(file)
        if cached["settings"] == settings:
            return cached
        log(f"calibration {graph}: cached settings differ from the config, recalibrating")
    start = time.time()
    record = compute_calibration(settings, log)
    _write_json(path, record)
    log(f"calibration {graph}: done in {time.time() - start:.0f} s -> {path}")
    return record


def compute_calibration(settings: dict, log: Log = print) -> dict:
    """Runs `gssm_jax.calibration.calibrate_pair` on the family `settings["graph"]` (see `calibration_settings`).

    Returns:
      `{"settings", "target", "target_stderr", "unit", "alphas": {side: {"alpha_X", "alpha_Z"}},
      "difficulty": {side: {"mean", "stderr"}}, "pair": CalibratedPair.to_json()}`; difficulty in `unit`.
    """
    from gssm_jax.difficulty import measurer as difficulty
    from gssm_jax.difficulty import search as calibration  # noqa: PLC0415 (JAX work only when not cached)

    graph = settings["graph"]
    log(f"calibration {graph} ({settings['measure']}, seeds {settings['seeds']}, "
        f"{settings['batch_size']}x{settings['length']} tokens per seed)")
    measurer = difficulty.Measurer(get_family(graph), seeds=settings["seeds"], batch_size=settings["batch_size"],
                                   length=settings["length"])
    pair = calibration.calibrate_pair(measurer, measure=settings["measure"], tolerance=settings["tolerance"],
                                      small=settings["small"], bounds=tuple(settings["bounds"]),
                                      grid_points=settings["grid_points"], log=log)
    record = {"settings": settings, "target": pair.target, "target_stderr": pair.target_stderr,
              "unit": difficulty.MEASURES[settings["measure"]], "alphas": {}, "difficulty": {}, "pair": pair.to_json()}
    for side, (small_name, free_name) in SIDE_ALPHAS.items():
        result = getattr(pair, side)
        record["alphas"][side] = {small_name: settings["small"], free_name: result.alpha}
        record["difficulty"][side] = {"mean": result.mean, "stderr": result.stderr}
        log(f"calibration {graph}: {side}: {free_name}={result.alpha:.4g} -> {result.mean:.4f} +- "
            f"{result.stderr:.4f} (target {pair.target:.4f}, converged={result.converged})")
    return record


def _write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    metrics.write_json_atomic(path, payload)


# ---- runs ----------------------------------------------------------------------------------------
def run_config(config: ml_collections.ConfigDict, cell: Cell, alphas: dict[str, float],
               workdir: str) -> ml_collections.ConfigDict:
    """The training config of one cell: `config`'s training fields with the cell's graph, seeds and model."""
    run = ml_collections.ConfigDict(config.to_dict())
    run.graph = get_family(cell.graph).config(alphas["alpha_X"], alphas["alpha_Z"])
    run.seed = cell.seed
    run.data.length = config.experiment1.lengths[cell.graph]
    # Seed k on both sides shares kernel key, data stream and initialisation: a paired design.
    run.data.data_seed = config.data.data_seed + cell.seed
    run.model.init_seed = cell.seed
    run.model.update(config.experiment1.models[cell.model])
    run.workdir = cell.run_dir(workdir)
    return run


def _signature(config: dict) -> dict:
    """The fields that make two runs comparable (a finished run with other values would corrupt the report)."""
    graph = GraphSpec.from_config(config["graph"])
    return {"graph": [(node.name, node.states, round(node.alpha, 12), node.parents) for node in graph.nodes],
            "seed": config["seed"], "length": config["data"]["length"], "batch_size": config["data"]["batch_size"],
            "model": {key: config["model"][key] for key in ("width", "depth", "heads")},
            "num_steps": config["train"]["num_steps"]}


def check_run_dir(run: ml_collections.ConfigDict) -> None:
    """Raises SweepError when `run.workdir` already holds a run trained with different settings."""
    path = os.path.join(run.workdir, metrics.CONFIG_FILE)
    if not os.path.exists(path):
        return
    with open(path) as file:
        existing = _signature(json.load(file))
    planned = _signature(json.loads(run.to_json()))
    differing = sorted(key for key in planned if planned[key] != existing.get(key))
    if differing:
        raise SweepError(f"{run.workdir} was trained with other {', '.join(differing)} than this config plans "
                         f"(e.g. after a calibration change); use a new --workdir or delete that run directory")


def train_run(run: ml_collections.ConfigDict) -> dict:
    """Trains (or resumes) one run in `run.workdir`; returns its result.json content."""
    from gssm_jax.training import loop as train  # noqa: PLC0415 (keeps planning and reporting free of the training stack)

    try:
        return train.train_and_evaluate(run, run.workdir)
    except train.Preempted as preempted:  # SystemExit is not an Exception: it stops a local sweep too
        raise SystemExit(f"{run.workdir}: {preempted}") from None


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
        raise ValueError(f"need slurm time_minutes > 0, gpus_per_node >= 0 and max_parallel >= 1; got {options}")
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


# ---- the experiment ------------------------------------------------------------------------------
def run_experiment(config: ml_collections.ConfigDict, workdir: str, *, slurm: SlurmOptions | None = None,
                   log: Log = print) -> dict[str, Any]:
    """Calibrates every graph (cached), then trains every unfinished cell, locally or on Slurm (`slurm`).

    Returns:
      `{cell name: result dict or the exception of a failed run}` for the runs trained now.

    Raises:
      SweepError: a run directory holds a run with other settings, or a calibration failed.
    """
    def launch(tasks: list[Task], stage: str) -> dict[str, Any]:
        folder = os.path.join(workdir, "slurm", stage)
        return run_local(tasks, log) if slurm is None else run_slurm(tasks, folder, slurm, log)

    graphs = list(config.experiment1.graphs)
    measure = config.calibration.measure
    missing = [graph for graph in graphs if not _calibration_cached(config, graph, workdir)]
    log(f"experiment 1 in {workdir}: {len(graphs)} graphs, calibration by {measure}: "
        f"{len(graphs) - len(missing)} cached, {len(missing)} to compute")
    outcomes = launch([Task(f"calibrate {graph}", calibrate_graph, (config, graph, workdir, log))
                       for graph in missing], "calibration")
    failed = [name for name, outcome in outcomes.items() if isinstance(outcome, Exception)]
    if failed:
        raise SweepError(f"calibration failed for {', '.join(failed)}: {outcomes[failed[0]]}")
    alphas = {graph: calibrate_graph(config, graph, workdir, log)["alphas"] for graph in graphs}

    tasks = []
    cells = plan(config)
    for cell in cells:
        run = run_config(config, cell, alphas[cell.graph][cell.side], workdir)
        check_run_dir(run)
        if not is_finished(run.workdir):
            tasks.append(Task(cell.name, train_run, (run,)))
    log(f"training: {len(cells)} runs, {len(cells) - len(tasks)} finished, {len(tasks)} to train or resume")
    return launch(tasks, "training")


def _calibration_cached(config: ml_collections.ConfigDict, graph: str, workdir: str) -> bool:
    path = calibration_path(workdir, graph, config.calibration.measure)
    if not os.path.exists(path):
        return False
    with open(path) as file:
        return json.load(file)["settings"] == calibration_settings(config, graph)

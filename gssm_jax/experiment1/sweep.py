"""The Experiment 1 sweep: calibrated pairs, one training run per cell, run locally or on Slurm.

A *cell* is (graph family, side, graph seed, model size); its run directory is
`WORKDIR/runs/<graph>/<side>/seed<k>/<model>/` (the run directory format of `gssm_jax.training.run_files`).
The free alpha of each side comes from `calibrate_graph`, cached in
`WORKDIR/calibration/<graph>.<measure>.json`. A run whose `result.json` exists is finished and
skipped; any other run is (re)started and `train_and_evaluate` resumes it from its latest checkpoint.
A run directory trained with different settings (e.g. after a calibration change) is an error, so
results of two configurations never mix in one report.

The plan (cells, run directories) is `gssm_jax.experiment1.plan`, the launchers
`gssm_jax.experiment1.launchers`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import ml_collections

from gssm_jax import files
from gssm_jax.experiment1.launchers import Log, SlurmOptions, Task, run_local, run_slurm
from gssm_jax.experiment1.plan import SweepError, check_run_dir, is_finished, plan, run_config
from gssm_jax.model.families import get_family

SIDE_ALPHAS = {"small_alpha_x": ("alpha_X", "alpha_Z"), "small_alpha_z": ("alpha_Z", "alpha_X")}  # (small, free)


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
    """Runs `gssm_jax.difficulty.calibrate_pair` on the family `settings["graph"]` (see `calibration_settings`).

    Returns:
      `{"settings", "target", "target_stderr", "unit", "alphas": {side: {"alpha_X", "alpha_Z"}},
      "difficulty": {side: {"mean", "stderr"}}, "pair": CalibratedPair.to_json()}`; difficulty in `unit`.
    """
    from gssm_jax import difficulty

    graph = settings["graph"]
    log(f"calibration {graph} ({settings['measure']}, seeds {settings['seeds']}, "
        f"{settings['batch_size']}x{settings['length']} tokens per seed)")
    measurer = difficulty.Measurer(get_family(graph), seeds=settings["seeds"], batch_size=settings["batch_size"],
                                   length=settings["length"])
    pair = difficulty.calibrate_pair(measurer, measure=settings["measure"], tolerance=settings["tolerance"],
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
    files.write_json(path, payload)


def train_run(run: ml_collections.ConfigDict) -> dict:
    """Trains (or resumes) one run in `run.workdir`; returns its result.json content."""
    from gssm_jax.training import loop as train  # noqa: PLC0415 (keeps planning and reporting free of the training stack)

    try:
        return train.train_and_evaluate(run, run.workdir)
    except train.Preempted as preempted:  # SystemExit is not an Exception: it stops a local sweep too
        raise SystemExit(f"{run.workdir}: {preempted}") from None



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

"""The Experiment 1 sweep: calibrated pairs, a learning rate chosen per program, every run trained in ensembles.

A *cell* is (matching measure, graph family, side, graph seed, model entry) (`gssm_jax.experiment1.plan`). The
sweep runs in stages, each skipping what is already done, so rerunning the command resumes it:

1. **calibration** of every graph on every measure (`gssm_jax.experiment1.calibration`, cached in
   `WORKDIR/calibration/<graph>.<measure>.json`): each seed's two sides matched to one target; a seed whose pair
   could not be matched is left out of the training, with a log line;
2. **n-gram floors** (`gssm_jax.experiment1.floors`, one per seed folder) and the **learning-rate grid**
   (`gssm_jax.experiment1.tuning`), launched together;
3. the **choice** of one peak rate per (measure, graph, model entry) from the validation loss;
4. the **main runs** at the chosen rate; the tuning run at that rate is its seed's main run (a link).

Runs of one program train as ensembles (`gssm_jax.experiment1.ensembles`); a run whose alphas are the same
under two measures (`match=both`) is trained once and linked into the later measure's folder. A run whose
`result.json` exists is finished and skipped; any other run is (re)started and resumes from its checkpoint.
A run directory trained with other settings (e.g. after a calibration change) is an error, so results of two
configurations never mix in one report. Locally, tasks run in this process or in `config.experiment1.workers`
spawned processes; on Slurm (`slurm`) every ensemble is one array task.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from typing import Any

import ml_collections

from gssm_jax.difficulty.sides import get_side
from gssm_jax.errors import check_names
from gssm_jax.experiment1 import ensembles, tuning
from gssm_jax.experiment1.calibration import cached_record, calibrate_graph, calibration_length, check_calibration
from gssm_jax.experiment1.floors import floor_path, ngram_floor, read_floor
from gssm_jax.experiment1.launchers import Log, RunOutcomes, SlurmOptions, Task, run_local, run_slurm, worker_pool
from gssm_jax.experiment1.plan import Cell, SweepError, check_run_dir, plan_cells, run_config
from gssm_jax.gssm.families import get_family
from gssm_jax.training import run_directory

Runs = dict[Cell, ml_collections.ConfigDict]


def train_ensemble(runs: list[ml_collections.ConfigDict]) -> RunOutcomes:
    """Trains (or resumes) the runs of one program together; `{run directory: result or the exception}`.

    A run that diverges is set aside with its error and the others go on from their checkpoints (a resumed
    run ends bitwise as an uninterrupted one).
    """
    from gssm_jax.training import loop, run_directory  # noqa: PLC0415 (planning and reporting need no training)

    outcomes, waiting = RunOutcomes(), list(runs)
    while waiting:
        try:
            results = loop.train_ensemble(waiting)
        except loop.Preempted as preempted:  # SystemExit is not an Exception: it stops a local sweep too
            raise SystemExit(f"{waiting[0].workdir} and {len(waiting) - 1} more: {preempted}") from None
        except run_directory.Diverged as diverged:
            outcomes[diverged.workdir] = diverged
            waiting = [run for run in waiting if run.workdir != diverged.workdir]
            continue
        outcomes.update({run.workdir: result for run, result in zip(waiting, results, strict=True)})
        waiting = []
    return RunOutcomes({run.workdir: outcomes[run.workdir] for run in runs})


def calibrate_measures(config: ml_collections.ConfigDict, graph: str, measures: tuple[str, ...], workdir: str,
                       log: Log = print) -> dict[str, dict]:
    """`{measure: calibration record}` of `graph`, every measure measured on the same sampled batches."""
    from gssm_jax import compilation_cache, difficulty  # noqa: PLC0415 (JAX work only when not cached)

    compilation_cache.enable()
    calibration = config.calibration
    measurer = difficulty.Measurer(get_family(graph), seeds=calibration.seeds, batch_size=calibration.batch_size,
                                   length=calibration_length(config, graph), measures=measures)
    return {measure: calibrate_graph(config, graph, measure, workdir, log, measurer) for measure in measures}


def floor_task(run: ml_collections.ConfigDict, seed_dir: str) -> dict:
    """The n-gram floor of one seed folder (a picklable module-level task)."""
    from gssm_jax import compilation_cache  # noqa: PLC0415 (JAX only in the task)

    compilation_cache.enable()
    return ngram_floor(run, seed_dir)


def _shared_runs(runs: Runs) -> dict[Cell, Cell]:
    """`{cell: the earlier cell it repeats}`: same graph, side, seed, model and rate under an earlier measure, and a
    training config equal up to the workdir and the cell record (e.g. the same alphas under both measures)."""
    def key(run: ml_collections.ConfigDict) -> str:
        fields = run.to_dict()
        fields.pop("workdir")
        fields["experiment1"].pop("cell")
        return json.dumps(fields, sort_keys=True, default=str)

    first: dict[tuple, Cell] = {}
    shared = {}
    for cell, run in runs.items():
        identity = (cell.graph, cell.side, cell.seed, cell.model, cell.learning_rate, key(run))
        if identity in first:
            shared[cell] = first[identity]
        else:
            first[identity] = cell
    return shared


def _link(path: str, target: str) -> None:
    """Makes `path` a relative symbolic link to `target` (a run directory or a floor file, maybe not written yet),
    unless `path` exists already (e.g. a run trained before: `check_run_dir` vets it)."""
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(os.path.relpath(target, os.path.dirname(path)), path)


def _floor_tasks(config: ml_collections.ConfigDict, cells: list[Cell], alphas: dict[Cell, dict], workdir: str
                 ) -> list[Task]:
    """One n-gram floor task per seed folder without one; a folder whose data another folder has (same graph,
    side, seed and alphas under another measure) links that folder's floor instead."""
    first: dict[tuple, str] = {}
    tasks = []
    for cell in cells:
        seed_dir = cell.seed_dir(workdir)
        data = (cell.graph, cell.side, cell.seed, json.dumps(alphas[cell], sort_keys=True))
        if first.setdefault(data, seed_dir) != seed_dir:
            _link(floor_path(seed_dir), floor_path(first[data]))
        elif read_floor(seed_dir) is None and all(task.args[1] != seed_dir for task in tasks):
            tasks.append(Task(f"n-gram floor {os.path.relpath(seed_dir, workdir)}", floor_task,
                              (run_config(config, cell, alphas[cell], workdir), seed_dir)))
    return tasks


def _training_tasks(config: ml_collections.ConfigDict, runs: Runs, links: dict[Cell, Cell], workdir: str) -> list[Task]:
    """Links the runs that repeat another, then one task per ensemble of the unfinished rest."""
    for cell, target in links.items():
        os.makedirs(target.run_dir(workdir), exist_ok=True)
        _link(cell.run_dir(workdir), target.run_dir(workdir))
    waiting = [cell for cell in runs if cell not in links and not run_directory.is_finished(runs[cell].workdir)]
    for cell in waiting:
        check_run_dir(runs[cell])
    programs: dict[tuple, list[Cell]] = {}
    for cell in waiting:
        programs.setdefault(cell.program, []).append(cell)
    tasks = []
    for (graph, model), cells in programs.items():
        limit = ensembles.ensemble_limit(config, runs[cells[0]], len(cells))
        for index, members in enumerate(ensembles.split(cells, limit)):
            name = f"{graph}/{model} ensemble {index + 1} ({len(members)} runs)"
            tasks.append(Task(name, train_ensemble, ([runs[cell] for cell in members],)))
    return tasks


def _alphas(records: dict[tuple[str, str], dict], cell: Cell) -> dict[str, float] | None:
    """The cell's alphas from its seed's calibrated pair, or None when that pair was not matched."""
    pair = records[cell.graph, cell.measure]["pairs"].get(str(cell.seed))
    if pair is None or not pair["matched"]:
        return None
    side = pair[cell.side]
    return {"alpha_X": side["alpha_X"], "alpha_Z": side["alpha_Z"]}


# ---- the experiment ------------------------------------------------------------------------------
def check_experiment(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuses, before anything is calibrated or compiled, a sweep config that cannot run (one line per error).

    Checks config.experiment1 (graphs, sides, seeds, models, lengths, learning rates, ensemble and workers),
    config.calibration, the workdir, and the training config of every (graph, model) of the plan.

    Raises:
      UserError: naming the field and the fix.
    """
    from gssm_jax.training import run as training_run  # noqa: PLC0415 (the training stack only when training)

    sweep = config.experiment1
    for field, names, get in (("graphs", sweep.graphs, get_family), ("sides", sweep.sides, get_side)):
        check_names(f"config.experiment1.{field}", names, get, SweepError)
    for field in ("seeds", "models", "learning_rates"):
        if not sweep[field]:
            raise SweepError(f"config.experiment1.{field} is empty; give at least one")
    if not all(float(rate) > 0 for rate in sweep.learning_rates):
        raise SweepError(f"config.experiment1.learning_rates={tuple(sweep.learning_rates)}: every rate must be > 0")
    if not 0 <= sweep.tuning_seeds <= len(sweep.seeds) or (len(sweep.learning_rates) > 1 and not sweep.tuning_seeds):
        raise SweepError(f"config.experiment1.tuning_seeds={sweep.tuning_seeds}: give 1..{len(sweep.seeds)} with "
                         "several learning rates (0 only with one)")
    ensembles.check_settings(config)
    missing = [graph for graph in sweep.graphs if graph not in sweep.lengths]
    if missing:
        raise SweepError(f"config.experiment1.lengths has no entry for {', '.join(missing)}; add one per graph")
    check_calibration(config, graphs_field="config.experiment1.graphs")
    for graph in sweep.graphs:
        alphas = dict(zip(("alpha_X", "alpha_Z"), get_family(graph).reference, strict=True))
        for model in sweep.models:
            cell = Cell(config.calibration.measures[0], graph, sweep.sides[0], int(sweep.seeds[0]), model)
            training_run.resolve(run_config(config, cell, alphas, workdir), None)
    training_run.check_workdir(workdir)


def run_experiment(config: ml_collections.ConfigDict, workdir: str, *, slurm: SlurmOptions | None = None,
                   log: Log = print) -> dict[str, Any]:
    """Calibrates, computes the n-gram floors, chooses the learning rates, trains every unfinished run.

    Runs locally (this process, or `config.experiment1.workers` processes), or on Slurm (`slurm`).

    Returns:
      `{name: result or the exception it raised}` of what ran now: calibrations and floors by task name, runs
      by run directory.

    Raises:
      UserError: a config field the sweep cannot run with (`check_experiment`), before anything runs.
      SweepError: a run directory holds a run with other settings, or a calibration failed.
    """
    check_experiment(config, workdir)
    inside = os.path.join(workdir, "")
    log = functools.partial(_relative_log, log, inside)
    with worker_pool(ensembles.workers(config) if slurm is None else 1) as pool:
        def launch(tasks: list[Task], stage: str) -> dict[str, Any]:
            if slurm is not None:
                outcomes = run_slurm(tasks, os.path.join(workdir, "slurm", stage), slurm, log)
            else:
                outcomes = run_local(tasks, log, pool)
            flat = {}
            for name, outcome in outcomes.items():
                flat.update(outcome if isinstance(outcome, RunOutcomes) else {name: outcome})
            return flat

        return _stages(config, workdir, launch, log)


def _relative_log(log: Log, inside: str, line: str) -> None:
    """`log(line)` with the run directories under the workdir `inside` shown relative to it."""
    log(line.replace(inside, ""))


def _stages(config: ml_collections.ConfigDict, workdir: str, launch: Callable[[list[Task], str], dict[str, Any]],
            log: Log) -> dict[str, Any]:
    """The stages of the module docstring, each task list handed to `launch(tasks, stage name)`."""
    graphs, measures = list(config.experiment1.graphs), tuple(config.calibration.measures)
    missing = {graph: tuple(measure for measure in measures if cached_record(config, graph, measure, workdir) is None)
               for graph in graphs}
    missing = {graph: todo for graph, todo in missing.items() if todo}
    log(f"experiment 1 in {workdir}: {len(graphs)} graphs, calibration by {', '.join(measures)}: "
        f"{len(graphs) - len(missing)} graphs cached, {len(missing)} to compute")
    done = launch([Task(f"calibrate {graph}", calibrate_measures, (config, graph, todo, workdir, log))
                   for graph, todo in missing.items()], "calibration")
    failed = [name for name, outcome in done.items() if isinstance(outcome, Exception)]
    if failed:
        raise SweepError(f"calibration failed for {', '.join(failed)}: {done[failed[0]]}")
    records = {(graph, measure): calibrate_graph(config, graph, measure, workdir, log)
               for graph in graphs for measure in measures}

    cells, alphas = [], {}
    for cell in plan_cells(config):
        alphas[cell] = _alphas(records, cell)
        if alphas[cell] is None:
            log(f"{cell.name}: left out, the calibration could not match seed {cell.seed}'s pair")
        else:
            cells.append(cell)
    tuned = tuning.tuning_cells(config, cells)
    tuning_runs = {cell: run_config(config, cell, alphas[cell.main()], workdir) for cell in tuned}
    floors = _floor_tasks(config, cells, alphas, workdir)
    tuning_tasks = _training_tasks(config, tuning_runs, _shared_runs(tuning_runs), workdir)
    log(f"stage 1: {len(floors)} n-gram floors, {len(tuning_runs)} learning-rate runs "
        f"({len(tuning.learning_rates(config))} rates x {len(tuning.tuning_seeds(config))} seeds x sides x models), "
        f"{len(tuning_tasks)} ensembles to train")
    outcomes = launch(floors + tuning_tasks, "tuning")

    rates = tuning.choose(config, workdir, cells)
    log("learning rates: " + ", ".join(f"{key} {rate:g}" for key, rate in sorted(rates.items())))
    runs = {cell: run_config(config, cell, alphas[cell], workdir, rates[tuning.key(cell)]) for cell in cells}
    links = _shared_runs(runs)
    for cell in cells:  # the tuning run at the chosen rate is its seed's main run
        tuned_cell = dataclasses.replace(cell, learning_rate=rates[tuning.key(cell)])
        if tuned_cell in tuning_runs and cell not in links:
            links[cell] = tuned_cell
    main_tasks = _training_tasks(config, runs, links, workdir)
    waiting = sum(len(task.args[0]) for task in main_tasks)
    log(f"stage 2: {len(runs)} runs ({len(links)} linked to a tuning run or another measure's), "
        f"{len(runs) - len(links) - waiting} finished, {waiting} to train in {len(main_tasks)} ensembles")
    return {**outcomes, **launch(main_tasks, "training")}

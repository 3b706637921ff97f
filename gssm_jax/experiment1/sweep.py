"""The Experiment 1 sweep: calibrated pairs, one training run per cell, run locally or on Slurm.

A *cell* is (matching measure, graph family, side, graph seed, model entry); its run directory is
`WORKDIR/runs/<measure>/<graph>/<side>/seed<k>/<model>/` (the run directory format of
`gssm_jax.training.run_directory`). The free alpha of each side comes from
`gssm_jax.experiment1.calibration.calibrate_graph` (the pipeline `gssm-calibrate` runs too), cached in
`WORKDIR/calibration/<graph>.<measure>.json`; with two measures (`match=both`) one task per graph measures
both on the same sampled batches. A run whose alphas are the same under two measures (the small_alpha_x side
holds the family's reference setting under every measure) is trained once: the later measure's run directory
is a symbolic link to the first's. Each seed folder also gets its n-gram floor (`gssm_jax.experiment1.floors`).
A run whose `result.json` exists is finished and skipped; any other run is (re)started and
`train_and_evaluate` resumes it from its latest checkpoint.
A run directory trained with different settings (e.g. after a calibration change) is an error, so
results of two configurations never mix in one report.

The plan (cells, run directories) is `gssm_jax.experiment1.plan`, the launchers
`gssm_jax.experiment1.launchers`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from gssm_jax.difficulty.sides import get_side
from gssm_jax.errors import check_names
from gssm_jax.experiment1.calibration import cached_record, calibrate_graph, calibration_length, check_calibration
from gssm_jax.experiment1.floors import floor_path, ngram_floor
from gssm_jax.experiment1.launchers import Log, SlurmOptions, Task, run_local, run_slurm
from gssm_jax.experiment1.plan import Cell, SweepError, check_run_dir, is_finished, plan, run_config
from gssm_jax.gssm.families import get_family


def train_run(run: ml_collections.ConfigDict) -> dict:
    """Trains (or resumes) one run in `run.workdir`; returns its result.json content."""
    from gssm_jax.training import loop  # noqa: PLC0415 (keeps planning and reporting free of the training stack)

    try:
        return loop.train_and_evaluate(run, run.workdir)
    except loop.Preempted as preempted:  # SystemExit is not an Exception: it stops a local sweep too
        raise SystemExit(f"{run.workdir}: {preempted}") from None


def calibrate_measures(config: ml_collections.ConfigDict, graph: str, measures: tuple[str, ...], workdir: str,
                       log: Log = print) -> dict[str, dict]:
    """`{measure: calibration record}` of `graph`, every measure measured on the same sampled batches."""
    from gssm_jax import difficulty  # noqa: PLC0415 (JAX work only when not cached)

    calibration = config.calibration
    measurer = difficulty.Measurer(get_family(graph), seeds=calibration.seeds, batch_size=calibration.batch_size,
                                   length=calibration_length(config, graph), measures=measures)
    return {measure: calibrate_graph(config, graph, measure, workdir, log, measurer) for measure in measures}


def floor_task(run: ml_collections.ConfigDict, seed_dir: str) -> dict:
    """The n-gram floor of one seed folder (a picklable module-level task)."""
    return ngram_floor(run, seed_dir)


def _shared_runs(runs: dict[Cell, ml_collections.ConfigDict]) -> dict[Cell, Cell]:
    """`{cell: the earlier cell it repeats}`: same graph, side, seed and model under an earlier measure, and a
    training config equal up to the workdir and the cell record (e.g. the same alphas under both measures)."""
    def key(run: ml_collections.ConfigDict) -> str:
        fields = run.to_dict()
        fields.pop("workdir")
        fields["experiment1"].pop("cell")
        return json.dumps(fields, sort_keys=True, default=str)

    first: dict[tuple, Cell] = {}
    shared = {}
    for cell, run in runs.items():
        identity = (cell.graph, cell.side, cell.seed, cell.model, key(run))
        if identity in first:
            shared[cell] = first[identity]
        else:
            first[identity] = cell
    return shared


def _link(path: str, target: str) -> None:
    """Makes `path` a relative symbolic link to `target` (a run directory or a floor file, maybe not written yet),
    unless `path` exists already (e.g. a run trained before under this measure: `check_run_dir` vets it)."""
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(os.path.relpath(target, os.path.dirname(path)), path)


# ---- the experiment ------------------------------------------------------------------------------
def check_experiment(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuses, before anything is calibrated or compiled, a sweep config that cannot run (one line per error).

    Checks config.experiment1 (graphs, sides, seeds, models, lengths), config.calibration, the workdir, and the
    training config of every (graph, model) of the plan (`gssm_jax.training.run.resolve`).

    Raises:
      UserError: naming the field and the fix.
    """
    from gssm_jax.training.run import check_workdir, resolve  # noqa: PLC0415 (the training stack only when training)

    sweep = config.experiment1
    for field, names, get in (("graphs", sweep.graphs, get_family), ("sides", sweep.sides, get_side)):
        check_names(f"config.experiment1.{field}", names, get, SweepError)
    for field in ("seeds", "models"):
        if not sweep[field]:
            raise SweepError(f"config.experiment1.{field} is empty; give at least one")
    missing = [graph for graph in sweep.graphs if graph not in sweep.lengths]
    if missing:
        raise SweepError(f"config.experiment1.lengths has no entry for {', '.join(missing)}; add one per graph")
    check_calibration(config, graphs_field="config.experiment1.graphs")
    check_workdir(workdir)
    for graph in sweep.graphs:
        alphas = dict(zip(("alpha_X", "alpha_Z"), get_family(graph).reference, strict=True))
        for model in sweep.models:
            cell = Cell(config.calibration.measures[0], graph, sweep.sides[0], int(sweep.seeds[0]), model)
            resolve(run_config(config, cell, alphas, workdir), None)


def run_experiment(config: ml_collections.ConfigDict, workdir: str, *, slurm: SlurmOptions | None = None,
                   log: Log = print) -> dict[str, Any]:
    """Calibrates every graph on every measure (cached), computes the n-gram floors, trains every unfinished cell.

    Runs locally, or on Slurm (`slurm`).

    Returns:
      `{task name: result dict or the exception of a failed task}` for the runs trained now (and floors computed).

    Raises:
      UserError: a config field the sweep cannot run with (`check_experiment`), before anything runs.
      SweepError: a run directory holds a run with other settings, or a calibration failed.
    """
    def launch(tasks: list[Task], stage: str) -> dict[str, Any]:
        folder = os.path.join(workdir, "slurm", stage)
        return run_local(tasks, log) if slurm is None else run_slurm(tasks, folder, slurm, log)

    check_experiment(config, workdir)
    graphs, measures = list(config.experiment1.graphs), tuple(config.calibration.measures)
    missing = {graph: tuple(measure for measure in measures if cached_record(config, graph, measure, workdir) is None)
               for graph in graphs}
    missing = {graph: todo for graph, todo in missing.items() if todo}
    log(f"experiment 1 in {workdir}: {len(graphs)} graphs, calibration by {', '.join(measures)}: "
        f"{len(graphs) - len(missing)} graphs cached, {len(missing)} to compute")
    outcomes = launch([Task(f"calibrate {graph}", calibrate_measures, (config, graph, todo, workdir, log))
                       for graph, todo in missing.items()], "calibration")
    failed = [name for name, outcome in outcomes.items() if isinstance(outcome, Exception)]
    if failed:
        raise SweepError(f"calibration failed for {', '.join(failed)}: {outcomes[failed[0]]}")
    alphas = {(graph, measure): calibrate_graph(config, graph, measure, workdir, log)["alphas"]
              for graph in graphs for measure in measures}

    cells = plan(config)
    runs = {cell: run_config(config, cell, alphas[cell.graph, cell.measure][cell.side], workdir) for cell in cells}
    shared = _shared_runs(runs)
    floors, tasks = {}, []
    for cell, run in runs.items():
        if cell in shared and (os.path.islink(run.workdir) or not os.path.exists(run.workdir)):
            os.makedirs(runs[shared[cell]].workdir, exist_ok=True)
            _link(run.workdir, runs[shared[cell]].workdir)
            continue
        check_run_dir(run)
        seed_dir = cell.seed_dir(workdir)
        if seed_dir not in floors and not os.path.exists(floor_path(seed_dir)):
            floors[seed_dir] = Task(f"n-gram floor {os.path.relpath(seed_dir, workdir)}", floor_task, (run, seed_dir))
        if not is_finished(run.workdir):
            tasks.append(Task(cell.name, train_run, (run,)))
    for cell, first in shared.items():  # a repeated run's seed folder shares the floor file too
        if os.path.islink(cell.run_dir(workdir)):
            _link(floor_path(cell.seed_dir(workdir)), floor_path(first.seed_dir(workdir)))
    log(f"training: {len(cells)} runs ({len(shared)} shared between measures), {len(cells) - len(shared) - len(tasks)}"
        f" finished, {len(tasks)} to train or resume; {len(floors)} n-gram floors to compute")
    return {**launch(list(floors.values()), "floors"), **launch(tasks, "training")}

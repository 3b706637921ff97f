"""The Experiment 1 sweep: calibrated pairs, one training run per cell, run locally or on Slurm.

A *cell* is (graph family, side, graph seed, model size); its run directory is
`WORKDIR/runs/<graph>/<side>/seed<k>/<model>/` (the run directory format of `gssm_jax.training.run_files`).
The free alpha of each side comes from `gssm_jax.experiment1.calibration.calibrate_graph` (the pipeline
`gssm-calibrate` runs too), cached in `WORKDIR/calibration/<graph>.<measure>.json`. A run whose
`result.json` exists is finished and skipped; any other run is (re)started and `train_and_evaluate`
resumes it from its latest checkpoint.
A run directory trained with different settings (e.g. after a calibration change) is an error, so
results of two configurations never mix in one report.

The plan (cells, run directories) is `gssm_jax.experiment1.plan`, the launchers
`gssm_jax.experiment1.launchers`.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from gssm_jax.experiment1.calibration import cached_record, calibrate_graph
from gssm_jax.experiment1.launchers import Log, SlurmOptions, Task, run_local, run_slurm
from gssm_jax.experiment1.plan import SweepError, check_run_dir, is_finished, plan, run_config


def train_run(run: ml_collections.ConfigDict) -> dict:
    """Trains (or resumes) one run in `run.workdir`; returns its result.json content."""
    from gssm_jax.training import loop as train  # noqa: PLC0415 (keeps planning and reporting free of the training stack)

    try:
        return train.train_and_evaluate(run, run.workdir)
    except train.Preempted as preempted:  # SystemExit is not an Exception: it stops a local sweep too
        raise SystemExit(f"{run.workdir}: {preempted}") from None


# ---- the experiment ------------------------------------------------------------------------------
def match_measure(config: ml_collections.ConfigDict) -> str:
    """The measure the sides are matched on: the single entry of `config.calibration.measures`."""
    measures = tuple(config.calibration.measures)
    if len(measures) != 1:
        raise SweepError(f"config.calibration.measures={measures}: the sweep matches the sides on one measure; "
                         f"give one (e.g. --config=experiment1:match=entropy)")
    return measures[0]


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
    measure = match_measure(config)
    missing = [graph for graph in graphs if cached_record(config, graph, measure, workdir) is None]
    log(f"experiment 1 in {workdir}: {len(graphs)} graphs, calibration by {measure}: "
        f"{len(graphs) - len(missing)} cached, {len(missing)} to compute")
    outcomes = launch([Task(f"calibrate {graph}", calibrate_graph, (config, graph, measure, workdir, log))
                       for graph in missing], "calibration")
    failed = [name for name, outcome in outcomes.items() if isinstance(outcome, Exception)]
    if failed:
        raise SweepError(f"calibration failed for {', '.join(failed)}: {outcomes[failed[0]]}")
    alphas = {graph: calibrate_graph(config, graph, measure, workdir, log)["alphas"] for graph in graphs}

    tasks = []
    cells = plan(config)
    for cell in cells:
        run = run_config(config, cell, alphas[cell.graph][cell.side], workdir)
        check_run_dir(run)
        if not is_finished(run.workdir):
            tasks.append(Task(cell.name, train_run, (run,)))
    log(f"training: {len(cells)} runs, {len(cells) - len(tasks)} finished, {len(tasks)} to train or resume")
    return launch(tasks, "training")

"""Experiment 1: calibrated pairs of each graph family, one training run per cell, the finite-data sweep.

`sides` (the two sides of the pair, defined once), `calibration` (the one calibration pipeline, shared
with `gssm-calibrate`), `plan` (cells, run directories, training configs), `launchers` (local and
Slurm), `sweep` (calibrate, then train every unfinished cell), `data_sweep` (excess loss against the
training-set size). The everyday names are re-exported here.
"""

from gssm_jax.experiment1.calibration import calibrate_graph
from gssm_jax.experiment1.launchers import (
           RequeueingTask,
           SlurmOptions,
           Task,
           make_executor,
           run_local,
           run_slurm,
           slurm_parameters,
)
from gssm_jax.experiment1.plan import Cell, SweepError, check_run_dir, is_finished, plan, run_config
from gssm_jax.experiment1.sides import SIDES, SMALL_ALPHA, Side, get_side
from gssm_jax.experiment1.sweep import run_experiment

__all__ = ["SIDES", "SMALL_ALPHA", "Cell", "RequeueingTask", "Side", "SlurmOptions", "SweepError", "Task",
           "calibrate_graph", "check_run_dir", "get_side", "is_finished", "make_executor", "plan", "run_config",
           "run_experiment", "run_local", "run_slurm", "slurm_parameters"]

"""Experiment 1: calibrated pairs of each graph family, one training run per cell, the finite-data sweep.

The sweep: `calibration` (the config-driven, cached calibration shared with `gssm-calibrate`, and its
report `calibration_report`), `learners` (model entries, widths matched in parameters), `plan` (cells,
run directories, training configs), `tuning` (the learning rate chosen on a validation split), `ensembles`
(which runs train as one program), `launchers` (local processes and Slurm), `sweep` (the stages, skipping
what is done), `data_sweep` (excess loss against the training-set size).
Baselines: `ngram` (the add-constant n-gram model) and `floors` (its floor per seed folder).
The report, read from the run directories: `runs` (the finished runs), `curves` (one curve's summaries),
`comparisons` (the sides paired by seed), `report_tables` and `plots`, `report` (report.md).
The everyday names are re-exported here, each imported on first use (`gssm_jax.lazy`).
"""

from gssm_jax import lazy

_NAMES = {
    "gssm_jax.experiment1.calibration": ("calibrate_graph",),
    "gssm_jax.experiment1.launchers": ("RequeueingTask", "SlurmOptions", "Task", "make_executor", "run_local",
                                       "run_slurm", "slurm_parameters"),
    "gssm_jax.experiment1.plan": ("Cell", "SweepError", "check_run_dir", "plan_cells", "run_config"),
    "gssm_jax.experiment1.sweep": ("run_experiment",),
}
__getattr__, __dir__ = lazy.exports(__name__, _NAMES)
__all__ = sorted(name for names in _NAMES.values() for name in names)

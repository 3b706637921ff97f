"""Experiment 1 end to end: calibrates the pairs of each graph, trains every run of the sweep, writes the report.

Does a learner do better on sequences whose latents are easy to infer (small alpha_X) or easy to predict
(small alpha_Z), at matched difficulty? Outputs in the workdir: calibration/<graph>.<measure>.json,
runs/<measure>/<graph>/<side>/seed<k>/<model>/, report.md (open it) and its PNG plots.

  gssm-experiment1 --config=experiment1:size=tiny --workdir=runs/quickstart
  gssm-experiment1 --config=experiment1:size=cpu --workdir=runs/experiment1
  gssm-experiment1 --report_only --workdir=runs/experiment1

Rerunning the same command skips finished runs and resumes the others. One sweep per workdir: a second one
on the same workdir is refused, naming the first (`gssm_jax.locks`; --report_only only reads the runs).
"""

import time

from absl import flags, logging
from ml_collections import config_flags

from gssm_jax import configs, locks
from gssm_jax.cli import common
from gssm_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", configs.path("experiment1"), "A config file or a shipped "
                                          "config's name, e.g. experiment1:size=cpu.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory (overrides config.workdir).")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "slurm"],
                              "local: train the runs here; slurm: one submitit array job.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rewrite report.md from the finished runs.")
_PARTITION = flags.DEFINE_string("slurm_partition", None, "Slurm partition (default: the cluster's default).")
_TIME = flags.DEFINE_integer("slurm_time_minutes", 240, "Wall-time limit per job; a job that reaches it is "
                             "requeued and resumes from its checkpoint.")
_GPUS = flags.DEFINE_integer("slurm_gpus_per_node", 1, "GPUs per job (each run is data-parallel over them).")
_CPUS = flags.DEFINE_integer("slurm_cpus_per_task", 8, "CPU cores per job.")
_PARALLEL = flags.DEFINE_integer("slurm_max_parallel", 64, "Most array tasks running at once.")
_CLUSTER = flags.DEFINE_enum("slurm_cluster", "slurm", ["slurm", "local", "debug"],
                             "submitit executor: slurm, or local/debug to try the Slurm path without a cluster.")


def _sweep(config, workdir: str) -> list[str]:
    """Runs the sweep (holding the workdir); returns the names of the runs that failed."""
    from gssm_jax import experiment1  # noqa: PLC0415 (JAX only once the config and the workdir are checked)

    slurm = None
    if _LAUNCHER.value == "slurm":
        slurm = experiment1.SlurmOptions(partition=_PARTITION.value, time_minutes=_TIME.value,
                                         gpus_per_node=_GPUS.value, cpus_per_task=_CPUS.value,
                                         max_parallel=_PARALLEL.value, cluster=_CLUSTER.value)
    outcomes = experiment1.run_experiment(config, workdir, slurm=slurm, log=logging.info)
    return [name for name, outcome in outcomes.items() if isinstance(outcome, Exception)]


def main(argv):
    common.check_no_arguments(argv)
    config = _CONFIG.value
    workdir = common.resolve_workdir(config.workdir, _WORKDIR.value)
    start = time.time()
    failed = []
    if not _REPORT_ONLY.value:
        with locks.hold(workdir):
            failed = _sweep(config, workdir)
    from gssm_jax.experiment1 import report  # noqa: PLC0415 (matplotlib)

    try:
        path = report.write_report(workdir, report.Settings.from_config(config.report))
    except UserError:
        if failed:  # no run finished: the failures are the news, not the missing report
            raise SystemExit(_failed_message(failed)) from None
        raise
    with open(path) as file:
        answer = file.read().split("## Learning curves")[0]
    print(answer, flush=True)  # the answer and the per-graph verdicts; the rest is in the file
    logging.info("report: %s (total %.0f s)", path, time.time() - start)
    if failed:
        raise SystemExit(_failed_message(failed) + "; the report covers the others")


def _failed_message(failed: list[str]) -> str:
    return (f"error: {len(failed)} runs failed ({', '.join(failed)}; their errors are logged above); fix the "
            "cause and rerun the same command to train them")


def run() -> None:
    """The console script (`gssm-experiment1`): `--help`, else parses the flags and runs `main`."""
    common.run(main, config="experiment1")


if __name__ == "__main__":
    run()

"""Finite-data sweep: the excess loss (nats/token) against the number of training sequences.

Generates one dataset into <workdir>/dataset, trains one run per training-set size on a prefix of it
(<workdir>/runs/n<N>) and writes <workdir>/data_sweep.md. Rerunning skips finished runs.

  gssm-data-sweep --config=data_sweep:size=tiny --workdir=runs/data_sweep_tiny
  gssm-data-sweep --config=data_sweep --workdir=runs/data_sweep
"""

from absl import flags
from ml_collections import config_flags

from gssm_jax import locks
from gssm_jax.cli import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file or a shipped config's name, with an "
                                          "optional :arg, e.g. data_sweep:size=cpu.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory (dataset/, runs/n<N>/, data_sweep.md).")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    common.check_no_arguments(argv)
    config = _CONFIG.value
    workdir = common.resolve_workdir(config.get("workdir"), _WORKDIR.value)
    with locks.hold(workdir):
        from gssm_jax.experiment1.data_sweep import run_data_sweep  # noqa: PLC0415 (JAX once checked)

        run_data_sweep(config, workdir)


def run() -> None:
    """The console script (`gssm-data-sweep`): `--help`, else parses the flags and runs `main`."""
    common.run(main, config="data_sweep")


if __name__ == "__main__":
    run()

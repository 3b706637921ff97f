"""Finite-data sweep: excess loss against the number of training sequences.

  gssm-data-sweep --config=data_sweep --workdir=runs/data_sweep
"""

from absl import flags
from ml_collections import config_flags

from gssm_jax.cli import common
from gssm_jax.experiment1.data_sweep import run_data_sweep

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file or a shipped config's name, with an "
                                          "optional :arg, e.g. data_sweep:size=cpu.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory (dataset/, runs/n<N>/, data_sweep.md).")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    common.check_no_arguments(argv)
    config = _CONFIG.value
    run_data_sweep(config, common.resolve_workdir(config.get("workdir"), _WORKDIR.value))


def run() -> None:
    """The console script (`gssm-data-sweep`): parses the flags, then runs `main`."""
    common.run(main)


if __name__ == "__main__":
    run()

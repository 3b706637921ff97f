"""Finite-data sweep: excess loss against the number of training sequences.

  gssm-data-sweep --config=data_sweep --workdir=runs/data_sweep
"""

from absl import app, flags
from ml_collections import config_flags

from gssm_jax.cli.common import parse_flags, quiet_library_logs, resolve_workdir
from gssm_jax.experiment1.data_sweep import run_data_sweep

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file or a shipped config's name, with an "
                                          "optional :arg, e.g. data_sweep:size=cpu.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory (dataset/, runs/n<N>/, data_sweep.md).")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    config = _CONFIG.value
    run_data_sweep(config, resolve_workdir(config.get("workdir"), _WORKDIR.value))


def run() -> None:
    """The console script (`gssm-data-sweep`): parses the flags, then runs `main`."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()

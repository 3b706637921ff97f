"""Trains a transformer on sequences sampled on the fly from a GSSM.

  gssm-train --config=base --config.train.num_steps=200 --workdir=runs/train_200

Rerunning the same command resumes from the latest checkpoint in the workdir; Ctrl-C or SIGTERM saves a
checkpoint first. A rerun whose config changes the computation is refused (`gssm_jax.training.resume`).
"""

from absl import flags, logging
from ml_collections import config_flags

from gssm_jax import parallel
from gssm_jax.cli import common
from gssm_jax.training import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file or a shipped config's name, with an "
                                          "optional :arg, e.g. base:size=tiny.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (overrides config.workdir).")
flags.mark_flags_as_required(["config"])


def main(argv):
    common.check_no_arguments(argv)
    config = _CONFIG.value
    workdir = common.resolve_workdir(config.workdir, _WORKDIR.value)
    parallel.initialize_distributed(config.distributed.initialize)  # before any other JAX call
    try:
        result = loop.train_and_evaluate(config, workdir)
    except loop.Preempted as preempted:
        logging.warning("%s", preempted)
        raise SystemExit(128 + preempted.signal_number) from None  # the shell's status for death by that signal
    logging.info("Finished: %s", result)


def run() -> None:
    """The console script (`gssm-train`): parses the flags, then runs `main`."""
    common.run(main)


if __name__ == "__main__":
    run()

"""Trains a transformer on sequences sampled on the fly from a GSSM.

  gssm-train --config=base --config.train.num_steps=200 --workdir=runs/train_200

Rerunning the same command resumes from the latest checkpoint in the workdir.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from gssm_jax.cli import common as cli
from gssm_jax.training import loop as train
from gssm_jax.training import mesh as parallel
from gssm_jax.training.step import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file or a shipped config's name, with an "
                                          "optional :arg, e.g. base:size=tiny.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (overrides config.workdir).")
flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    workdir = cli.resolve_workdir(config.workdir, _WORKDIR.value)
    parallel.initialize_distributed(config.distributed.initialize)  # before any other JAX call
    cli.quiet_library_logs()
    logging.info("The config:\n%s", config)
    try:
        result = train.train_and_evaluate(config, workdir)
    except train.Preempted as preempted:
        logging.warning("%s", preempted)
        raise SystemExit(143) from None
    except (ConfigError, FloatingPointError) as error:
        raise SystemExit(f"error: {error}") from None
    logging.info("Finished: %s", result)


def run() -> None:
    """The console script (`gssm-train`): parses the flags, then runs `main`."""
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()

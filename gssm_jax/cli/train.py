"""Trains one learner on sequences of a GSSM, sampled on the fly (or read from a dataset), and evaluates its
excess loss over the exact entropy rate (nats/token) on held-out sequences.

  gssm-train --config=base:size=tiny --workdir=runs/train_tiny
  gssm-train --config=base --config.train.num_steps=200 --workdir=runs/train_200
  gssm-train --config=base --config.model.kind=mamba --workdir=runs/mamba

Writes config.json, metrics.jsonl, checkpoints/ and, once finished, result.json into the workdir. Rerunning
the same command resumes from the latest checkpoint; Ctrl-C or SIGTERM saves a checkpoint first. A rerun whose
config changes the computation is refused (`gssm_jax.training.resume`). One process per workdir
(`gssm_jax.locks`; not taken with config.distributed.initialize, where every host runs this command).
"""

import contextlib
import os

from absl import flags, logging
from ml_collections import config_flags

from gssm_jax import locks
from gssm_jax.cli import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file or a shipped config's name, with an "
                                          "optional :arg, e.g. base:size=tiny.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (overrides config.workdir).")
flags.mark_flags_as_required(["config"])


def main(argv):
    common.check_no_arguments(argv)
    config = _CONFIG.value
    workdir = common.resolve_workdir(config.workdir, _WORKDIR.value)
    multi_host = bool(config.get("distributed", {}).get("initialize", False))
    with contextlib.nullcontext() if multi_host else locks.hold(workdir):
        from gssm_jax import parallel  # noqa: PLC0415 (JAX only once the config and the workdir are checked)
        from gssm_jax.training import loop  # noqa: PLC0415

        parallel.initialize_distributed(config.distributed.initialize)  # before any other JAX call
        try:
            result = loop.train_and_evaluate(config, workdir)
        except loop.Preempted as preempted:
            logging.warning("%s", preempted)
            raise SystemExit(128 + preempted.signal_number) from None  # the shell's status for death by that signal
    logging.info("%s", finished_line(result, workdir))


def finished_line(result: dict, workdir: str) -> str:
    """The run's outcome in one line: its held-out excess loss, the entropy rate it is over, where the rest is."""
    from gssm_jax.training import run_directory  # noqa: PLC0415

    tokens = int(result["tokens_seen"])
    return (f"finished: excess loss {result['eval/excess_loss_nats_per_token']:.4f} +- "
            f"{result['eval/excess_loss_standard_error']:.4f} nats/token over the exact entropy rate "
            f"{result['eval/entropy_nats_per_token']:.4f} of the held-out sequences, after {tokens:,} tokens "
            f"({os.path.join(workdir, run_directory.RESULT_FILE)})")


def run() -> None:
    """The console script (`gssm-train`): `--help`, else parses the flags and runs `main`."""
    common.run(main, config="base")


if __name__ == "__main__":
    run()

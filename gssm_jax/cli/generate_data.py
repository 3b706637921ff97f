"""Generates a finite dataset into --workdir: train and test token shards, the true kernels, meta.json.

By default the dataset the `base` config trains on at the same size (`gssm_jax.configs.data`), so
`gssm-train --config=base:size=SIZE --config.data.source=file --config.data.path=DIR` trains on it.

  gssm-generate-data --config=data:size=tiny --workdir=data/tiny
  gssm-generate-data --config=data --workdir=data/four_by_four_cpu
  gssm-generate-data --config=data:family=chain,alpha_x=0.05,alpha_z=0.001 --workdir=data/chain

Rerunning the same command resumes an interrupted generation; on a finished dataset it only verifies it.
"""

import time

from absl import flags, logging
from ml_collections import config_flags

from gssm_jax import locks
from gssm_jax.cli import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file or a shipped config's name, with an "
                                          "optional :arg, e.g. data:size=tiny.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Dataset directory.")
_SKIP_VERIFY = flags.DEFINE_bool("skip_verify", False, "Do not recompute the checksums of the finished dataset.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    common.check_no_arguments(argv)
    config = _CONFIG.value
    with locks.hold(_WORKDIR.value):
        from gssm_jax import data  # noqa: PLC0415 (JAX only once the config and the workdir are checked)

        start = time.perf_counter()

        def report(event: data.GenerationProgress) -> None:
            elapsed = time.perf_counter() - start
            logging.info("%s %s: %d/%d sequences (%.0f%%), %.1f s", event.file,
                         "found finished" if event.from_disk else "written", event.sequences_done,
                         event.sequences_total, 100 * event.sequences_done / event.sequences_total, elapsed)

        dataset = data.generate_dataset(
            _WORKDIR.value, config.graph.to_dict(), seed=config.seed, data_seed=config.data_seed,
            num_train=config.num_train, num_test=config.num_test, length=config.length,
            shard_size=config.shard_size, progress=report)
        if not _SKIP_VERIFY.value:
            dataset = data.load_dataset(dataset.directory, verify=True)
    logging.info("Dataset %s: %d train + %d test sequences of %d tokens (%s)%s", dataset.directory,
                 len(dataset.train), len(dataset.test), dataset.length, dataset.meta["dtype"],
                 "" if _SKIP_VERIFY.value else ", checksums verified")


def run() -> None:
    """The console script (`gssm-generate-data`): `--help`, else parses the flags and runs `main`."""
    common.run(main, config="data")


if __name__ == "__main__":
    run()

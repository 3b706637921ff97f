"""Calibrates the Experiment 1 pair of each graph in `config.calibration` on each measure; writes the report.

  gssm-calibrate --config=calibrate:graph=four_by_four --workdir=runs/calibrate
  gssm-calibrate --config=experiment1:graph=four_by_four --workdir=runs/calib

For each graph and measure: the target is the mean over the graph seeds of the difficulty of the
reference setting (or config.calibration.target); for every seed, the small alpha_X side gets alpha_Z
calibrated and the small alpha_Z side gets alpha_X calibrated, each within the tolerance of the target,
so each seed is a matched pair (its mismatch, difficulty x minus z, is logged and reported; a seed that
cannot be matched is reported with the reason). The same pipeline as the Experiment 1 sweep
(`gssm_jax.experiment1.calibration`: the same records, cached in `<workdir>/calibration/<graph>.<measure>.json`,
so a sweep in the same workdir reuses them). Then, if config.calibration.compression_table, a table
compares at every setting the entropy rate (nats/token [bits]) with zlib, bz2 and lzma (bits/token), and a
trained model's cross-entropy when config.calibration.model_results names its result.json. Outputs in the
workdir: calibration.json, calibration.md, calibration.png. A time estimate is logged after the first
compiled trial, and the measured time at the end.
"""

from __future__ import annotations

from absl import flags, logging
from ml_collections import config_flags

from gssm_jax.cli import common
from gssm_jax.experiment1.calibration import check_calibration, run_calibration

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file or a shipped config's name, with an "
                                          "optional :arg, e.g. calibrate:graph=chain.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (overrides config.workdir).")
flags.mark_flags_as_required(["config"])


def main(argv):
    common.check_no_arguments(argv)
    config = _CONFIG.value
    workdir = common.resolve_workdir(config.get("workdir"), _WORKDIR.value)
    check_calibration(config)  # before the config is logged: a bad field is then the only output
    logging.info("The config:\n%s", config)
    run_calibration(config, workdir, log=logging.info)


def run() -> None:
    """The console script (`gssm-calibrate`): parses the flags, then runs `main`."""
    common.run(main)


if __name__ == "__main__":
    run()

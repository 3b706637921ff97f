"""Calibrates the Experiment 1 pair of each graph in `config.calibration` on each measure; writes the report.

For each graph and measure: the target is the mean over the graph seeds of the difficulty of the
reference setting (or config.calibration.target); for every seed, the small alpha_X side gets alpha_Z
calibrated and the small alpha_Z side gets alpha_X calibrated, each within the tolerance of the target,
so each seed is a matched pair (a seed that cannot be matched is reported with the reason). The same
pipeline and records as the Experiment 1 sweep (`<workdir>/calibration/<graph>.<measure>.json`), so a
sweep in the same workdir reuses them. Outputs: calibration.json, calibration.md (entropy in nats/token,
bits in brackets; compressors in bits/token, gzip in composable-llm's bytes/token) and calibration.png.

  gssm-calibrate --config=calibrate:graph=four_by_four,size=tiny --workdir=runs/calibrate_tiny
  gssm-calibrate --config=calibrate:graph=four_by_four --workdir=runs/calibrate
  gssm-calibrate --config=experiment1:graph=four_by_four --workdir=runs/calib
"""

from __future__ import annotations

from absl import flags, logging
from ml_collections import config_flags

from gssm_jax import locks
from gssm_jax.cli import common
from gssm_jax.experiment1.calibration import check_calibration

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file or a shipped config's name, with an "
                                          "optional :arg, e.g. calibrate:graph=chain.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (overrides config.workdir).")
flags.mark_flags_as_required(["config"])


def main(argv):
    common.check_no_arguments(argv)
    config = _CONFIG.value
    workdir = common.resolve_workdir(config.get("workdir"), _WORKDIR.value)
    check_calibration(config)
    with locks.hold(workdir):
        from gssm_jax.experiment1.calibration import run_calibration  # noqa: PLC0415 (JAX once checked)

        run_calibration(config, workdir, log=logging.info)


def run() -> None:
    """The console script (`gssm-calibrate`): `--help`, else parses the flags and runs `main`."""
    common.run(main, config="calibrate")


if __name__ == "__main__":
    run()

"""Calibration of (alpha_X, alpha_Z) pairs of equal difficulty for one graph family.

Commands (after `pip install -e .`, from any directory):

  gssm-calibrate --config=calibrate:graph=four_by_four --workdir=runs/calibrate
  gssm-calibrate --config=calibrate:graph=eight_by_four,measure=entropy --workdir=runs/cal8_entropy
  gssm-calibrate --config=calibrate:graph=eight_by_four,measure=gzip --workdir=runs/cal8_gzip
  gssm-calibrate --config=calibrate:graph=four_by_four,size=paper \
      --config.calibration.model_results=reference=runs/ref/result.json --workdir=runs/cal_4x4

The optional argument after `:` is a comma-separated list of `key=value`:
  graph    a family of gssm_jax.gssm.families: four_by_four (default), eight_by_four, chain;
  measure  entropy (exact entropy rate, nats/token), gzip (composable-llm's bytes/token), zlib, bz2, lzma
           (bits/token), or both (default: entropy and gzip);
  size     cpu (default; one pair per measure in under a minute on 2 CPU cores, about 5 minutes for
           eight_by_four: see CPU_SIZES), paper (composable-llm's batch of 1024 sequences at the family's
           length, 8 seeds; for accelerators) or tiny (2 seeds of 4 x 64 tokens, coarse tolerances: seconds);
           the size scales the compute only: the graph is the family's at every size.
Each graph seed's two sides are matched to one target (the mean difficulty of the reference setting over the
seeds), each within the tolerance; a seed that cannot be matched is reported and not trained by the sweep.
Everything is in `config.calibration` (the schema the Experiment 1 sweep reads too: `gssm-calibrate
--config=experiment1:graph=four_by_four` computes the sweep's own calibration). The workdir receives
calibration/<graph>.<measure>.json (the cache the sweep reads), calibration.json, calibration.md and
calibration.png.
"""

from __future__ import annotations

import ml_collections

from gssm_jax.configs.common import SIZES, calibration_config, parse_arg
from gssm_jax.difficulty.measures import MEASURES
from gssm_jax.difficulty.sides import SMALL_ALPHA
from gssm_jax.gssm.families import FAMILIES, get_family

MEASURE_CHOICES = (*MEASURES, "both")
ARG_DEFAULTS = {"graph": "four_by_four", "measure": "both", "size": "cpu"}
ARG_CHOICES = {"graph": tuple(FAMILIES), "measure": MEASURE_CHOICES, "size": SIZES}
# (seeds, batch_size, length) at size=cpu, per family: one pair on one measure takes about a minute on 2 CPU
# cores for four_by_four (benchmarks/calibration.py). eight_by_four's forward algorithm is ~256 times dearer per
# token (about 5-6 k tokens/s on 2 quiet CPU cores), so its entropy trials get 4 x 4 x 2048 tokens (10-19 s each;
# one pair in 5 minutes at a72be37). Drawing X's 65536 Dirichlet rows takes ~1 s per seed (kernels.sample_log_gamma).
CPU_SIZES = {"four_by_four": (8, 32, 2048), "eight_by_four": (4, 4, 2048), "chain": (8, 32, 2048)}
# At size=cpu when only compression measures are calibrated (no entropy): gzip's spread across graph seeds is
# larger and its bytes/token depend on T, so eight_by_four gets 16 seeds of 16 x 4096 tokens (~12 s per trial,
# one pair in 5 minutes at a72be37) and no compression table (that table also computes the entropy of every setting).
CPU_COMPRESSION_SIZES = {"eight_by_four": (16, 16, 4096)}
# Tolerance of each seed's side on |difficulty - target|, in each measure's unit (entropy: nats/token, 0.0035 =
# 0.005 bits; gzip: composable-llm's bytes/token; zlib, bz2, lzma: bits/token).
TOLERANCES = {"entropy": 0.0035, "gzip": 0.002, "zlib": 0.01, "bz2": 0.01, "lzma": 0.01}
# size=tiny: coarse, for smoke runs and the docs test (entropy 0.07 nats = 0.1 bits).
TINY_TOLERANCES = {"entropy": 0.07, "gzip": 0.05, "zlib": 0.2, "bz2": 0.2, "lzma": 0.2}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The calibration's configuration; `arg` as described in the module docstring."""
    options = parse_arg(arg, ARG_DEFAULTS, ARG_CHOICES)
    family = get_family(options["graph"])
    compression_only = options["measure"] not in ("entropy", "both") and family.name in CPU_COMPRESSION_SIZES
    grid_points, tolerances = 6, TOLERANCES
    if options["size"] == "paper":
        seeds, batch_size, length = 8, 1024, family.length
    elif options["size"] == "tiny":
        (seeds, batch_size, length), grid_points, tolerances = (2, 4, 64), 3, TINY_TOLERANCES
    else:
        seeds, batch_size, length = (CPU_COMPRESSION_SIZES if compression_only else CPU_SIZES)[family.name]

    config = ml_collections.ConfigDict()
    config.calibration = calibration_config(
        measures=("entropy", "gzip") if options["measure"] == "both" else (options["measure"],),
        seeds=range(seeds), batch_size=batch_size, length=length, tolerance=tolerances, grid_points=grid_points,
        small=SMALL_ALPHA,
        # Off for eight_by_four's compression-only cpu size, where the entropy of 16 x 16 x 4096 tokens per
        # setting would take an hour.
        compression_table=not (compression_only and options["size"] == "cpu"))
    config.calibration.graphs = (family.name,)
    # Output directory; the --workdir flag overrides it (one of the two must be set).
    config.workdir = ml_collections.config_dict.placeholder(str)
    return config

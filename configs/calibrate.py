"""Calibration of (alpha_X, alpha_Z) pairs of equal difficulty for one graph family.

Commands (from the repository root):

  python -m experiments.calibrate --config=configs/calibrate.py:graph=four_by_four --workdir=/tmp/cal_4x4
  python -m experiments.calibrate --config=configs/calibrate.py:graph=eight_by_four,measure=entropy \
      --workdir=/tmp/cal_8x4_entropy
  python -m experiments.calibrate --config=configs/calibrate.py:graph=eight_by_four,measure=gzip \
      --workdir=/tmp/cal_8x4_gzip
  python -m experiments.calibrate --config=configs/calibrate.py:graph=four_by_four,size=paper \
      --config.model_results=reference=runs/ref/result.json --workdir=runs/cal_4x4

The optional argument after `:` is a comma-separated list of `key=value`:
  graph    a family of gssm_jax.model.families: four_by_four (default), eight_by_four, chain;
  measure  entropy (exact entropy rate, bits/token), gzip (the seed's bytes/token), zlib, bz2, lzma
           (bits/token), or both (default: entropy and gzip);
  size     cpu (default; one pair per measure in under a minute on 2 CPU cores, about 5 minutes for
           eight_by_four: see CPU_SIZES) or paper (the seed's batch of 1024 sequences at the family's
           length, 8 seeds; for accelerators).
The workdir receives calibration.json, calibration.md and calibration.png.
"""

from __future__ import annotations

import ml_collections

from gssm_jax.difficulty import MEASURES
from gssm_jax.model.families import FAMILIES, get_family

SIZES = ("cpu", "paper")
MEASURE_CHOICES = (*MEASURES, "both")
ARG_DEFAULTS = {"graph": "four_by_four", "measure": "both", "size": "cpu"}
# (seeds, batch_size, length) at size=cpu, per family: one pair on one measure takes about a minute on 2 CPU
# cores for four_by_four (benchmarks/calibration.py). eight_by_four's forward algorithm is ~256 times dearer per
# token (about 5-6 k tokens/s on 2 quiet CPU cores), so its entropy trials get 4 x 4 x 2048 tokens (10-19 s each;
# one pair in 5 minutes at a72be37). Drawing X's 65536 Dirichlet rows takes ~1 s per seed (kernels.sample_log_gamma).
CPU_SIZES = {"four_by_four": (8, 32, 2048), "eight_by_four": (4, 4, 2048), "chain": (8, 32, 2048)}
# At size=cpu when only compression measures are calibrated (no entropy): gzip's spread across graph seeds is
# larger and its bytes/token depend on T, so eight_by_four gets 16 seeds of 16 x 4096 tokens (~12 s per trial,
# one pair in 5 minutes at a72be37) and no compression table (that table also computes the entropy of every setting).
CPU_COMPRESSION_SIZES = {"eight_by_four": (16, 16, 4096)}
# Stopping tolerance of the search, in each measure's unit (bits/token; gzip: bytes/token).
TOLERANCES = {"entropy": 0.005, "gzip": 0.002, "zlib": 0.01, "bz2": 0.01, "lzma": 0.01}


def parse_arg(arg: str | None) -> dict:
    """Parses `key=value,...`; a ValueError names the bad key or value and lists the valid ones."""
    options = dict(ARG_DEFAULTS)
    for item in (arg or "").split(","):
        if not item.strip():
            continue
        key, separator, value = (part.strip() for part in item.partition("="))
        if not separator or key not in ARG_DEFAULTS:
            raise ValueError(f"config argument {item!r}: expected key=value with key in {', '.join(ARG_DEFAULTS)}")
        options[key] = value
    for key, valid in (("graph", tuple(FAMILIES)), ("measure", MEASURE_CHOICES), ("size", SIZES)):
        if options[key] not in valid:
            raise ValueError(f"config argument {key}={options[key]!r}: valid values are {', '.join(valid)}")
    return options


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The calibration's configuration; `arg` as described in the module docstring."""
    options = parse_arg(arg)
    family = get_family(options["graph"])
    compression_only = options["measure"] not in ("entropy", "both") and family.name in CPU_COMPRESSION_SIZES
    if options["size"] == "paper":
        seeds, batch_size, length = 8, 1024, family.length
    else:
        seeds, batch_size, length = (CPU_COMPRESSION_SIZES if compression_only else CPU_SIZES)[family.name]

    config = ml_collections.ConfigDict()
    # Graph family name (gssm_jax.model.families.FAMILIES).
    config.graph = family.name
    # Comma-separated measures to calibrate on, each one of gssm_jax.difficulty.MEASURES.
    config.measures = "entropy,gzip" if options["measure"] == "both" else options["measure"]
    # Number of graph seeds 0..seeds-1 averaged at every trial (>= 2 for standard errors); seed s draws
    # kernels from keys.kernel_key(s) and the data batch from keys.calibration_data_key(s).
    config.seeds = seeds
    # Sequences per seed and trial.
    config.batch_size = batch_size
    # Tokens per sequence (the seed used the family's length; gzip depends on it).
    config.length = length
    # The small alpha of each side of the pair (alpha_X on one side, alpha_Z on the other).
    config.small = 1e-3
    # Target difficulty in the measure's unit; None: the difficulty of the reference setting below
    # (a number only makes sense with a single measure).
    config.target = ml_collections.config_dict.placeholder(float)
    # Reference setting whose difficulty is the default target (default: the family's).
    config.reference_alpha_x = family.reference[0]
    config.reference_alpha_z = family.reference[1]

    config.search = ml_collections.ConfigDict()
    # Stopping tolerance on |difficulty - target| per measure, in that measure's unit.
    config.search.tolerance = ml_collections.ConfigDict(TOLERANCES)
    # The free alpha is searched in [min_alpha, max_alpha] (log scale); the range reached there is
    # reported when the target is outside it.
    config.search.min_alpha = 1e-4
    config.search.max_alpha = 10.0
    # Points of the initial log-spaced grid (>= 2); they also draw the difficulty curves.
    config.search.grid_points = 6

    # Also measure every setting with every compressor and the entropy rate (the compression table); off for
    # eight_by_four's compression-only cpu size, where the entropy of 16 x 16 x 4096 tokens would take an hour.
    config.compression_table = not (compression_only and options["size"] == "cpu")
    # Trained models to add to the compression table: comma-separated `row=path` where row is a table
    # row (reference, <measure>/small_alpha_x, <measure>/small_alpha_z) and path a run's result.json or
    # run directory; its eval/loss_nats_per_token is shown in bits/token.
    config.model_results = ""
    # Run directory; the --workdir flag overrides it (one of the two must be set).
    config.workdir = ml_collections.config_dict.placeholder(str)
    return config

"""Difficulty of a graph setting and the calibration of (alpha_X, alpha_Z) pairs of equal difficulty.

`measures` (compression measures of one batch), `measurer` (a setting over graph seeds, common random
numbers), `search` (the root finder), `sides` (the two sides of the Experiment 1 pair, defined once),
`pipeline` (both sides of the pair calibrated to one difficulty). The everyday names are
re-exported here.
"""

from gssm_jax.difficulty.measurer import (
    ALPHA_NAMES,
    Difficulty,
    Measurer,
    compression_performance,
    difficulty,
    entropy_bits_per_token,
    graph_at,
    sample_seed_batch,
    with_alphas,
)
from gssm_jax.difficulty.measures import (
    COMPRESSORS,
    MEASURES,
    NATS_PER_BIT,
    check_measure,
    compressed_bits_per_token,
    compression_measures,
    gzip_bytes_per_token,
    packed_bytes,
    parallel_map,
)
from gssm_jax.difficulty.pipeline import CalibratedPair, calibrate, calibrate_pair, curve
from gssm_jax.difficulty.search import Calibration, Evaluation, UnreachableTargetError, find_alpha

__all__ = ["ALPHA_NAMES", "COMPRESSORS", "MEASURES", "NATS_PER_BIT", "CalibratedPair", "Calibration", "Difficulty",
           "Evaluation", "Measurer", "UnreachableTargetError", "calibrate", "calibrate_pair", "check_measure",
           "compressed_bits_per_token", "compression_measures", "compression_performance",
           "curve", "difficulty", "entropy_bits_per_token", "find_alpha", "graph_at", "gzip_bytes_per_token",
           "packed_bytes", "parallel_map", "sample_seed_batch", "with_alphas"]

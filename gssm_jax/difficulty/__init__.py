"""Difficulty of a graph setting and the calibration of (alpha_X, alpha_Z) pairs of equal difficulty.

`measures` (compression measures of one batch, the units), `measurer` (settings over graph seeds, each
seed at its own setting, common random numbers), `search` (one seed's root finder, and the lockstep that
runs every seed's side by side), `sides` (the two sides of the Experiment 1 pair, defined once),
`pipeline` (both sides of every seed's pair calibrated to one difficulty). The everyday names are
re-exported here. Entropy is in nats/token, gzip in composable-llm's bytes/token, the compressors in
bits/token (`MEASURES`).
"""

from gssm_jax.difficulty.measurer import (
    ALPHA_NAMES,
    Difficulty,
    Measurer,
    compression_performance,
    difficulty,
    entropy_nats_per_token,
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
    unit,
)
from gssm_jax.difficulty.pipeline import CalibratedPairs, SeedPair, calibrate, calibrate_pair, curve
from gssm_jax.difficulty.search import Calibration, Evaluation, find_alpha, lockstep, search

__all__ = ["ALPHA_NAMES", "COMPRESSORS", "MEASURES", "NATS_PER_BIT", "CalibratedPairs", "Calibration", "Difficulty",
           "Evaluation", "Measurer", "SeedPair", "calibrate", "calibrate_pair", "check_measure",
           "compressed_bits_per_token", "compression_measures", "compression_performance",
           "curve", "difficulty", "entropy_nats_per_token", "find_alpha", "graph_at", "gzip_bytes_per_token",
           "lockstep", "packed_bytes", "parallel_map", "sample_seed_batch", "search", "unit", "with_alphas"]

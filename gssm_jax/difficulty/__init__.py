"""Difficulty of a graph setting and the calibration of (alpha_X, alpha_Z) pairs of equal difficulty.

`measures` (compression measures of one batch, the units), `measurer` (settings over graph seeds, each
seed at its own setting, common random numbers), `search` (one seed's root finder, and the lockstep that
runs every seed's side by side), `sides` (the two sides of the Experiment 1 pair, defined once),
`pipeline` (both sides of every seed's pair calibrated to one difficulty). The everyday names are
re-exported here, each imported on first use (`gssm_jax.lazy`: `sides` and `measures` need no JAX).
Entropy is in nats/token, gzip in composable-llm's bytes/token, the compressors in bits/token (`MEASURES`).
"""

from gssm_jax import lazy

_NAMES = {
    "gssm_jax.difficulty.measurer": ("ALPHA_NAMES", "Difficulty", "Measurer", "compression_performance", "difficulty",
                                     "entropy_nats_per_token", "graph_at", "sample_seed_batch", "with_alphas"),
    "gssm_jax.difficulty.measures": ("COMPRESSORS", "MEASURES", "NATS_PER_BIT", "check_measure",
                                     "compressed_bits_per_token", "compression_measures", "gzip_bytes_per_token",
                                     "packed_bytes", "parallel_map", "unit"),
    "gssm_jax.difficulty.pipeline": ("CalibratedPairs", "SeedPair", "calibrate", "calibrate_pair", "curve"),
    "gssm_jax.difficulty.search": ("Calibration", "Evaluation", "find_alpha", "lockstep", "seed_search"),
}
__getattr__, __dir__ = lazy.exports(__name__, _NAMES)
__all__ = sorted(name for names in _NAMES.values() for name in names)

"""Sampling token sequences: the JAX sampler and the numpy reference with composable-llm's draw order.

`sampler` (batches on device, sharded), `tables` (integer inverse-CDF thresholds), `threefry` (the
random words), `reference` (plain numpy, the test oracle). The everyday names are re-exported here.
"""

from gssm_jax.sampling.sampler import sample_tokens, sample_tokens_fn
from gssm_jax.sampling.tables import SamplingTables, sampling_tables

__all__ = ["SamplingTables", "sample_tokens", "sample_tokens_fn", "sampling_tables"]

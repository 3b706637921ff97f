"""Sampling token sequences: the JAX sampler and the numpy reference with composable-llm's draw order.

`sampler` (batches on device, sharded), `tables` (integer inverse-CDF thresholds), `numpy_sampler` (plain
numpy, the test oracle). The everyday names are re-exported here, imported on first use (`gssm_jax.lazy`).
"""

from gssm_jax import lazy

_NAMES = {"gssm_jax.sampling.sampler": ("sample_tokens", "sample_tokens_fn"),
          "gssm_jax.sampling.tables": ("SamplingTables", "sampling_tables")}
__getattr__, __dir__ = lazy.exports(__name__, _NAMES)
__all__ = sorted(name for names in _NAMES.values() for name in names)

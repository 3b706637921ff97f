"""The exact forward pass: token losses, log-likelihoods and the entropy rate of a GSSM.

`api` holds the public functions (re-exported here, imported on first use: `gssm_jax.lazy`); `factorised`
is the general pass over the factorised latent state, `chains` the fast passes for independent hidden chains.
"""

from gssm_jax import lazy

_NAMES = {"gssm_jax.inference.api": ("ContextEstimate", "EntropyRate", "context_log_likelihood", "entropy_rate",
                                     "log_likelihood", "negative_log_likelihood", "token_losses")}
__getattr__, __dir__ = lazy.exports(__name__, _NAMES)
__all__ = sorted(name for names in _NAMES.values() for name in names)

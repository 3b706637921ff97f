"""The exact forward pass: token losses, log-likelihoods and the entropy rate of a GSSM.

`api` holds the public functions (re-exported here); `factorised` is the general pass over the
factorised latent state, `chains` the fast passes for independent hidden chains.
"""

from gssm_jax.inference.api import (
    ContextEstimate,
    EntropyRate,
    context_log_likelihood,
    entropy_rate,
    log_likelihood,
    negative_log_likelihood,
    token_losses,
)

__all__ = ["ContextEstimate", "EntropyRate", "context_log_likelihood", "entropy_rate", "log_likelihood",
           "negative_log_likelihood", "token_losses"]

"""The sequence models trained on GSSM tokens: one backbone (`backbone`) around each kind's sequence mixer.

`registry.model_config(kind, vocab_size, fields)` and `registry.build(shape, rngs)` make any kind
(`KINDS`); `token_losses(model, tokens)` gives its per-token cross-entropy in nats.
"""

from gssm_jax.learners import registry
from gssm_jax.learners.backbone import LanguageModel, count_parameters, next_token_inputs, token_losses
from gssm_jax.learners.registry import KINDS

__all__ = ["KINDS", "LanguageModel", "count_parameters", "next_token_inputs", "registry", "token_losses"]

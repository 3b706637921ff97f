"""Sequence models trained on GSSM tokens: the transformer, the recurrent learners, and the n-gram floor."""

from gssm_jax.learners.registry import KINDS, build_model, matched_widths, model_config
from gssm_jax.learners.transformer import (
    Transformer,
    TransformerConfig,
    count_parameters,
    next_token_inputs,
    token_losses,
)

__all__ = ["KINDS", "Transformer", "TransformerConfig", "build_model", "count_parameters", "matched_widths",
           "model_config", "next_token_inputs", "token_losses"]

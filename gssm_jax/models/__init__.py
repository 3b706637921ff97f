"""Sequence models trained on GSSM tokens."""

from gssm_jax.models.transformer import Transformer, TransformerConfig, count_parameters, next_token_inputs

__all__ = ["Transformer", "TransformerConfig", "count_parameters", "next_token_inputs"]

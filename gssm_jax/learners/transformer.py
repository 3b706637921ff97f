"""The transformer's mixer: causal multi-head self-attention with rotary position embeddings.

The transformer of composable-llm (the upstream PyTorch codebase) is the backbone
(`gssm_jax.learners.backbone`) with this mixer and a gated SiLU MLP in every block:
RMSNorm -> attention, RMSNorm -> gated MLP, pre-norm residual. Which attention implementation runs is
`config.attention`, resolved by `gssm_jax.learners.attention`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from gssm_jax.errors import UserError
from gssm_jax.learners import attention
from gssm_jax.learners.backbone import BackboneConfig, Layout, dense

ROTARY_BASE = 10_000.0


@dataclasses.dataclass(frozen=True)
class TransformerConfig(BackboneConfig):
    """Shape of the transformer: `BackboneConfig` plus:

    heads: number of attention heads (>= 1); `width` must be divisible by it and the head size
      `width // heads` even (rotary pairs).
    mlp_ratio: gated-MLP hidden size as a multiple of `width` (> 0).
    attention: causal attention implementation, one of `gssm_jax.learners.attention.IMPLEMENTATIONS`
      ("auto" picks the fastest available for the backend, dtype and length).
    """

    heads: int = 4
    mlp_ratio: float = 4.0
    attention: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        if self.heads < 1 or self.mlp_ratio <= 0:
            raise UserError(f"config.model.heads={self.heads} must be >= 1 and config.model.mlp_ratio="
                            f"{self.mlp_ratio} > 0")
        if self.width % self.heads:
            raise UserError(f"config.model.width={self.width} must be divisible by config.model.heads={self.heads}")
        if (self.width // self.heads) % 2:
            raise UserError(
                f"config.model.width / heads = {self.width // self.heads} must be even for rotary embeddings"
            )
        attention.check_name(self.attention)

    @property
    def head_size(self) -> int:
        return self.width // self.heads

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.mlp_ratio * self.width))


def check_attention(config: TransformerConfig, length: int) -> attention.Choice:
    """The attention `config.attention` resolves to on this backend for sequences of `length` tokens.

    Raises ValueError (one line naming config.model.attention) if that choice cannot run here.
    """
    return attention.choose(config.attention, config.compute_dtype, length, config.head_size)


def apply_rotary(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotates feature pairs (i, i + head_size/2) of `x` (batch, length, heads, head_size) by position angles."""
    half = x.shape[-1] // 2
    frequencies = ROTARY_BASE ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions[:, None].astype(jnp.float32) * frequencies[None, :]  # (length, half)
    sin = jnp.sin(angles)[None, :, None, :].astype(x.dtype)
    cos = jnp.cos(angles)[None, :, None, :].astype(x.dtype)
    first, second = x[..., :half], x[..., half:]
    return jnp.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)


class CausalSelfAttention(nnx.Module):
    """Multi-head causal self-attention with rotary positions: (batch, length, width) -> same shape."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.qkv = dense(config, config.width, 3 * config.width, rngs)
        self.out = dense(config, config.width, config.width, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, _ = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.config.heads, self.config.head_size)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (batch, length, heads, head_size)
        positions = jnp.arange(length)
        query, key = apply_rotary(query, positions), apply_rotary(key, positions)
        attended = attention.causal_attention(query, key, value, self.config.attention)
        return self.out(attended.reshape(batch, length, self.config.width))


# Each block: norm, attention, norm, gated MLP, built in that order (the transformer's init keys).
LAYOUT = Layout(CausalSelfAttention, mlp=True, norms_first=True)

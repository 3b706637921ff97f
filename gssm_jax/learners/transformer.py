"""A decoder-only transformer in Flax NNX, the architecture of composable-llm (the upstream PyTorch codebase).

Pre-norm residual blocks (RMSNorm -> causal multi-head attention with rotary position embeddings,
RMSNorm -> gated SiLU MLP), a final RMSNorm and an untied output head over X's vocabulary.

Next-token convention: the model reads `next_token_inputs(tokens)`, i.e. a BOS token (id
`vocab_size`, an extra row of the input embedding) followed by `tokens[:, :-1]`, so its output at
position t predicts `tokens[:, t]` from `tokens[:, :t]`. Position 0 is predicted from BOS alone, and
the per-position losses cover all `length` positions, like `gssm_jax.inference.token_losses`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gssm_jax.errors import UserError
from gssm_jax.learners import attention

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ROTARY_BASE = 10_000.0


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Shape of the transformer.

    Attributes:
      vocab_size: number of token values V (X's states); the input embedding has V + 1 rows (BOS).
      width: residual stream width d_model; must be divisible by `heads`.
      depth: number of residual blocks.
      heads: number of attention heads; head size `width // heads` must be even (rotary pairs).
      mlp_ratio: gated-MLP hidden size as a multiple of `width`.
      dtype: computation dtype name, "float32" or "bfloat16" (parameters stay float32).
      init_scale: multiplier on the standard deviation of every hidden weight matrix at init (1.0 =
        fan-in variance scaling; embeddings N(0, init_scale^2); the output head starts at zero).
      attention: causal attention implementation, one of `gssm_jax.learners.attention.IMPLEMENTATIONS` ("auto" picks the
        fastest available for the backend, dtype and length).
      remat: recompute each block's activations in the backward pass instead of storing them
        (activation memory of one block instead of `depth`, for about a third more compute).
    """

    vocab_size: int
    width: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    dtype: str = "float32"
    init_scale: float = 1.0
    attention: str = "auto"
    remat: bool = False

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise UserError(f"config.model.dtype is {self.dtype!r}; valid dtypes are {', '.join(DTYPES)}")
        if self.heads < 1 or self.width < 1:
            raise UserError(f"config.model.heads={self.heads} and config.model.width={self.width} must be >= 1")
        if self.width % self.heads:
            raise UserError(f"config.model.width={self.width} must be divisible by config.model.heads={self.heads}")
        if (self.width // self.heads) % 2:
            raise UserError(
                f"config.model.width / heads = {self.width // self.heads} must be even for rotary embeddings"
            )
        if self.depth < 1 or self.mlp_ratio <= 0 or self.init_scale <= 0:
            raise UserError(f"config.model.depth={self.depth} must be >= 1, and config.model.mlp_ratio="
                            f"{self.mlp_ratio} and config.model.init_scale={self.init_scale} > 0")
        attention.check_name(self.attention)

    @property
    def head_size(self) -> int:
        return self.width // self.heads

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.mlp_ratio * self.width))

    @property
    def bos_token(self) -> int:
        return self.vocab_size


def check_attention(config: TransformerConfig, length: int) -> attention.Choice:
    """The attention `config.attention` resolves to on this backend for sequences of `length` tokens.

    Raises ValueError (one line naming config.model.attention) if that choice cannot run here.
    """
    return attention.choose(config.attention, DTYPES[config.dtype], length, config.head_size)


def _weight_init(scale: float):
    return nnx.initializers.variance_scaling(scale**2, "fan_in", "truncated_normal")


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
    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype = DTYPES[config.dtype]
        init = _weight_init(config.init_scale)
        self.qkv = nnx.Linear(config.width, 3 * config.width, use_bias=False, dtype=dtype, kernel_init=init, rngs=rngs)
        self.out = nnx.Linear(config.width, config.width, use_bias=False, dtype=dtype, kernel_init=init, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, _ = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.config.heads, self.config.head_size)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        positions = jnp.arange(length)
        query, key = apply_rotary(query, positions), apply_rotary(key, positions)
        attended = attention.causal_attention(query, key, value, self.config.attention)
        return self.out(attended.reshape(batch, length, self.config.width))


class GatedMLP(nnx.Module):
    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        dtype = DTYPES[config.dtype]
        init = _weight_init(config.init_scale)
        hidden = config.mlp_hidden
        self.gate_and_up = nnx.Linear(config.width, 2 * hidden, use_bias=False, dtype=dtype, kernel_init=init,
                                      rngs=rngs)
        self.down = nnx.Linear(hidden, config.width, use_bias=False, dtype=dtype, kernel_init=init, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        gate, up = jnp.split(self.gate_and_up(x), 2, axis=-1)
        return self.down(jax.nn.silu(gate) * up)


class Block(nnx.Module):
    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        dtype = DTYPES[config.dtype]
        self.attention_norm = nnx.RMSNorm(config.width, dtype=dtype, rngs=rngs)
        self.attention = CausalSelfAttention(config, rngs=rngs)
        self.mlp_norm = nnx.RMSNorm(config.width, dtype=dtype, rngs=rngs)
        self.mlp = GatedMLP(config, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nnx.Module):
    """Decoder-only transformer: `model(inputs)` maps int (batch, length) to float32 logits (batch, length, V)."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype = DTYPES[config.dtype]
        self.embed = nnx.Embed(config.vocab_size + 1, config.width, dtype=dtype,
                               embedding_init=nnx.initializers.normal(config.init_scale), rngs=rngs)
        self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.depth)])
        self.final_norm = nnx.RMSNorm(config.width, dtype=dtype, rngs=rngs)
        # A zero head starts every prediction at the uniform distribution (loss log V), so early
        # steps are not spent undoing random initial logits.
        self.head = nnx.Linear(config.width, config.vocab_size, use_bias=False, dtype=dtype,
                               kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, inputs: jax.Array) -> jax.Array:
        x = self.embed(inputs.astype(jnp.int32))
        for block in self.blocks:
            x = _remat_block(block, x) if self.config.remat else block(x)
        return self.head(self.final_norm(x)).astype(jnp.float32)


@nnx.remat
def _remat_block(block: Block, x: jax.Array) -> jax.Array:
    # Nothing saved: the backward pass reruns the block from its input, so a block's activations live
    # only while its gradient is computed.
    return block(x)


def next_token_inputs(tokens: jax.Array, bos_token: int) -> jax.Array:
    """`[BOS, tokens[:, :-1]]`: int32 (batch, length), so that output t predicts `tokens[:, t]`."""
    tokens = tokens.astype(jnp.int32)
    bos = jnp.full((tokens.shape[0], 1), bos_token, jnp.int32)
    return jnp.concatenate([bos, tokens[:, :-1]], axis=1)


def token_losses(model: Transformer, tokens: jax.Array) -> jax.Array:
    """Model cross-entropy -log q(x_t | x_<t) in nats, float32 (batch, length), for tokens (batch, length)."""
    logits = model(next_token_inputs(tokens, model.config.bos_token))
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens.astype(jnp.int32))


def count_parameters(params: Any) -> int:
    """Number of scalar parameters in a model or a parameter pytree."""
    if isinstance(params, nnx.Module):
        params = nnx.state(params, nnx.Param)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))

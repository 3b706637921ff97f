"""The language-model skeleton the recurrent learners share, and their common config fields.

A recurrent learner is the transformer with its attention replaced by a sequence mixer: the same
embedding (V + 1 rows, BOS = V), pre-norm residual blocks with RMSNorm, a final RMSNorm and an
untied zero-initialised head, and the same next-token convention (`next_token_inputs`), so
`transformer.token_losses` and the training loop apply unchanged.

Every mixer has two forms: `mixer(x)` over a whole (batch, length, width) sequence, the parallel
form used in training, and `mixer.step(cache, x_t)` over one token, the recurrence itself.
`RecurrentLM.decode` runs the step form with `lax.scan` over time; a test pins it to `__call__`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gssm_jax.errors import UserError
from gssm_jax.learners import recurrence
from gssm_jax.learners.transformer import DTYPES, GatedMLP


@dataclasses.dataclass(frozen=True)
class RecurrentConfig:
    """Fields common to the recurrent learners (each kind's config adds its own).

    Attributes:
      vocab_size: number of token values V; the input embedding has V + 1 rows (BOS).
      width: residual stream width d_model.
      depth: number of residual blocks.
      dtype: computation dtype name, "float32" or "bfloat16" (parameters stay float32; the linear
        recurrences always run in float32).
      init_scale: multiplier on the standard deviation of every hidden weight matrix at init (1.0 =
        fan-in variance scaling; embeddings N(0, init_scale^2); the output head starts at zero).
      scan: how linear recurrences run in training: "auto" (the fastest measured on the backend),
        "associative", "sequential" or "chunked" (`gssm_jax.learners.recurrence`).
      expansion: the mixer's hidden size as a multiple of `width` (> 0); each kind sets its default.
    """

    vocab_size: int
    width: int = 64
    depth: int = 2
    dtype: str = "float32"
    init_scale: float = 1.0
    scan: str = "auto"
    expansion: float = 1.0

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise UserError(f"config.model.dtype is {self.dtype!r}; valid dtypes are {', '.join(DTYPES)}")
        if self.width < 1 or self.depth < 1 or self.init_scale <= 0:
            raise UserError("config.model.width and depth must be >= 1 and init_scale > 0")
        if self.expansion <= 0:
            raise UserError(f"config.model.expansion={self.expansion} must be > 0")
        recurrence.check_method(self.scan)

    @property
    def bos_token(self) -> int:
        return self.vocab_size

    @property
    def hidden(self) -> int:
        """The mixer's hidden size, round(expansion * width) (at least 1)."""
        return max(1, int(round(self.expansion * self.width)))

    @property
    def compute_dtype(self) -> Any:
        return DTYPES[self.dtype]


def weight_init(scale: float):
    """Fan-in variance scaling (truncated normal) times `scale`, the transformer's hidden-matrix init."""
    return nnx.initializers.variance_scaling(scale**2, "fan_in", "truncated_normal")


def dense(config: RecurrentConfig, inputs: int, outputs: int, rngs: nnx.Rngs, use_bias: bool = False) -> nnx.Linear:
    return nnx.Linear(inputs, outputs, use_bias=use_bias, dtype=config.compute_dtype,
                      kernel_init=weight_init(config.init_scale), rngs=rngs)


class Block(nnx.Module):
    """Pre-norm residual block: x + mixer(norm(x)), then x + mlp(norm(x)) when the kind has an MLP."""

    def __init__(self, config: RecurrentConfig, mixer: nnx.Module, mlp: GatedMLP | None, *, rngs: nnx.Rngs):
        self.mixer_norm = nnx.RMSNorm(config.width, dtype=config.compute_dtype, rngs=rngs)
        self.mixer = mixer
        self.mlp_norm = None if mlp is None else nnx.RMSNorm(config.width, dtype=config.compute_dtype, rngs=rngs)
        self.mlp = mlp

    def _mlp(self, x: jax.Array) -> jax.Array:
        return x if self.mlp is None else x + self.mlp(self.mlp_norm(x))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._mlp(x + self.mixer(self.mixer_norm(x)))

    def step(self, cache: Any, x: jax.Array) -> tuple[Any, jax.Array]:
        cache, mixed = self.mixer.step(cache, self.mixer_norm(x))
        return cache, self._mlp(x + mixed)


class RecurrentLM(nnx.Module):
    """`model(inputs)`: int (batch, length) -> float32 logits (batch, length, V); `decode` is the same, token by token.

    `make_mixer(rngs)` builds one block's sequence mixer: a module with `__call__(x)` on
    (batch, length, width), `initial_cache(batch)` and `step(cache, x_t)` on (batch, width).
    `make_mlp(rngs)` (optional) builds the block's gated MLP.
    """

    def __init__(self, config: RecurrentConfig, make_mixer: Callable[[nnx.Rngs], nnx.Module],
                 make_mlp: Callable[[nnx.Rngs], GatedMLP] | None = None, *, rngs: nnx.Rngs):
        self.config = config
        dtype = config.compute_dtype
        self.embed = nnx.Embed(config.vocab_size + 1, config.width, dtype=dtype,
                               embedding_init=nnx.initializers.normal(config.init_scale), rngs=rngs)
        self.blocks = nnx.List([Block(config, make_mixer(rngs), make_mlp(rngs) if make_mlp else None, rngs=rngs)
                                for _ in range(config.depth)])
        self.final_norm = nnx.RMSNorm(config.width, dtype=dtype, rngs=rngs)
        # Zero head: every prediction starts uniform (loss log V), as in the transformer.
        self.head = nnx.Linear(config.width, config.vocab_size, use_bias=False, dtype=dtype,
                               kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, inputs: jax.Array) -> jax.Array:
        x = self.embed(inputs.astype(jnp.int32))
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x)).astype(jnp.float32)

    def decode(self, inputs: jax.Array) -> jax.Array:
        """The logits of `__call__`, computed one token at a time by each mixer's recurrence (`lax.scan` over time)."""
        caches = [block.mixer.initial_cache(inputs.shape[0]) for block in self.blocks]

        def step(caches, token):  # token: (batch,)
            x = self.embed(token.astype(jnp.int32))
            new_caches = []
            for block, cache in zip(self.blocks, caches, strict=True):
                cache, x = block.step(cache, x)
                new_caches.append(cache)
            return new_caches, self.head(self.final_norm(x)).astype(jnp.float32)

        _, logits = jax.lax.scan(step, caches, inputs.T)  # (length, batch, V)
        return jnp.moveaxis(logits, 0, 1)

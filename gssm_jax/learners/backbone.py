"""The language model every learner is: embedding, residual blocks around a sequence mixer, final norm, head.

The learners differ only in their sequence mixer (and whether their blocks carry a gated MLP): the
transformer's causal self-attention (`transformer`), Mamba's selective state space (`mamba`), Hawk's
RG-LRU (`hawk`), minGRU and minLSTM (`minrnn`) and the LSTM (`lstm`). The rest is defined here, once:

  inputs int (batch, length) -> embedding (V + 1 rows, BOS = V)      float (batch, length, width)
  depth x pre-norm block:  x + mixer(RMSNorm(x)), then x + GatedMLP(RMSNorm(x)) if the kind has an MLP
  final RMSNorm -> head (width -> V, untied)                         float32 logits (batch, length, V)

Next-token convention: the model reads `next_token_inputs(tokens)`, a BOS token (id V, the extra
embedding row) followed by `tokens[:, :-1]`, so its output at position t predicts `tokens[:, t]` from
`tokens[:, :t]`; position 0 is predicted from BOS alone and `token_losses` covers all `length`
positions, like `gssm_jax.inference.token_losses`.

Initialisation: hidden weight matrices fan-in variance scaling (truncated normal) times `init_scale`,
embeddings N(0, init_scale^2), norms 1, and a zero head, so that every prediction starts at the
uniform distribution (loss log V) and early steps are not spent undoing random initial logits.

A mixer maps (batch, length, width) to the same shape; one with a step form (`initial_cache(batch)`
and `step(cache, x_t)` on (batch, width), every recurrent mixer) also runs token by token in `decode`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gssm_jax.errors import UserError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """The fields every learner has (each kind's config adds its mixer's).

    Attributes:
      vocab_size: number of token values V (X's states); the input embedding has V + 1 rows (BOS).
      width: residual stream width d_model (>= 1).
      depth: number of residual blocks (>= 1).
      dtype: computation dtype name, "float32" or "bfloat16" (parameters stay float32).
      init_scale: multiplier on the standard deviation of every hidden weight matrix at init (> 0; 1.0 =
        fan-in variance scaling; embeddings N(0, init_scale^2); the output head starts at zero).
      remat: recompute each block's activations in the backward pass instead of storing them
        (activation memory of one block instead of `depth`, for about a third more compute).
    """

    vocab_size: int
    width: int = 64
    depth: int = 2
    dtype: str = "float32"
    init_scale: float = 1.0
    remat: bool = False

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise UserError(f"config.model.dtype is {self.dtype!r}; valid dtypes are {', '.join(DTYPES)}")
        if self.width < 1 or self.depth < 1 or self.init_scale <= 0:
            raise UserError(f"config.model.width={self.width} and config.model.depth={self.depth} must be >= 1 "
                            f"and config.model.init_scale={self.init_scale} > 0")

    @property
    def bos_token(self) -> int:
        return self.vocab_size

    @property
    def compute_dtype(self) -> Any:
        return DTYPES[self.dtype]


def weight_init(scale: float) -> nnx.Initializer:
    """Fan-in variance scaling (truncated normal) times `scale`: every hidden weight matrix's init."""
    return nnx.initializers.variance_scaling(scale**2, "fan_in", "truncated_normal")


def dense(config: BackboneConfig, inputs: int, outputs: int, rngs: nnx.Rngs, use_bias: bool = False) -> nnx.Linear:
    """A hidden linear map (inputs -> outputs) in the computation dtype, initialised by `weight_init`."""
    return nnx.Linear(inputs, outputs, use_bias=use_bias, dtype=config.compute_dtype,
                      kernel_init=weight_init(config.init_scale), rngs=rngs)


class GatedMLP(nnx.Module):
    """down(silu(gate) * up): (..., width) -> (..., width) with `config.mlp_hidden` hidden units."""

    def __init__(self, config: Any, *, rngs: nnx.Rngs):
        hidden = config.mlp_hidden
        self.gate_and_up = dense(config, config.width, 2 * hidden, rngs)
        self.down = dense(config, hidden, config.width, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        gate, up = jnp.split(self.gate_and_up(x), 2, axis=-1)
        return self.down(jax.nn.silu(gate) * up)


class Layout(NamedTuple):
    """What a kind puts into the backbone's blocks.

    mixer: `mixer(config, rngs=rngs)` builds one block's sequence mixer.
    mlp: whether each block has a gated MLP after its mixer (its config then defines `mlp_hidden`).
    norms_first: build (and so draw the init key of) each norm before the sublayer it feeds, as the
      transformer always has; the recurrent kinds build a block's sublayers first. Only the order of
      the key draws differs, hence the initial values; kept so that every kind's initial parameters
      are those of earlier runs (tests/test_pins.py, tests/training/test_step.py).
    """

    mixer: Callable[..., nnx.Module]
    mlp: bool = False
    norms_first: bool = False


class Block(nnx.Module):
    """Pre-norm residual block: x + mixer(norm(x)), then x + mlp(norm(x)) when the layout has an MLP."""

    def __init__(self, config: BackboneConfig, layout: Layout, *, rngs: nnx.Rngs):
        def norm() -> nnx.RMSNorm:
            return nnx.RMSNorm(config.width, dtype=config.compute_dtype, rngs=rngs)

        if layout.norms_first:
            self.mixer_norm = norm()
            self.mixer = layout.mixer(config, rngs=rngs)
            self.mlp_norm = norm() if layout.mlp else None
            self.mlp = GatedMLP(config, rngs=rngs) if layout.mlp else None
        else:
            mixer = layout.mixer(config, rngs=rngs)
            mlp = GatedMLP(config, rngs=rngs) if layout.mlp else None
            self.mixer_norm = norm()
            self.mixer = mixer
            self.mlp_norm = norm() if layout.mlp else None
            self.mlp = mlp

    def _mlp(self, x: jax.Array) -> jax.Array:
        return x if self.mlp is None else x + self.mlp(self.mlp_norm(x))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._mlp(x + self.mixer(self.mixer_norm(x)))

    def step(self, cache: Any, x: jax.Array) -> tuple[Any, jax.Array]:
        """One token x (batch, width) through the block, the mixer carrying its `cache`."""
        cache, mixed = self.mixer.step(cache, self.mixer_norm(x))
        return cache, self._mlp(x + mixed)


@nnx.remat
def _remat_block(block: Block, x: jax.Array) -> jax.Array:
    # Nothing saved: the backward pass reruns the block from its input, so a block's activations live
    # only while its gradient is computed.
    return block(x)


class LanguageModel(nnx.Module):
    """Every learner: `model(inputs)` maps int (batch, length) to float32 logits (batch, length, V).

    Built by `registry.build(config, rngs)`, which picks the kind's `Layout`; parameters (paths from
    the model): `embed`, `blocks/<i>/{mixer_norm, mixer, mlp_norm, mlp}`, `final_norm`, `head`.
    """

    def __init__(self, config: BackboneConfig, layout: Layout, *, rngs: nnx.Rngs):
        self.config = config
        dtype = config.compute_dtype
        self.embed = nnx.Embed(config.vocab_size + 1, config.width, dtype=dtype,
                               embedding_init=nnx.initializers.normal(config.init_scale), rngs=rngs)
        self.blocks = nnx.List([Block(config, layout, rngs=rngs) for _ in range(config.depth)])
        self.final_norm = nnx.RMSNorm(config.width, dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(config.width, config.vocab_size, use_bias=False, dtype=dtype,
                               kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def _logits(self, x: jax.Array) -> jax.Array:
        return self.head(self.final_norm(x)).astype(jnp.float32)

    def __call__(self, inputs: jax.Array) -> jax.Array:
        x = self.embed(inputs.astype(jnp.int32))
        for block in self.blocks:
            x = _remat_block(block, x) if self.config.remat else block(x)
        return self._logits(x)

    def decode(self, inputs: jax.Array) -> jax.Array:
        """The logits of `__call__`, one token at a time by each mixer's step form (`lax.scan` over time).

        inputs: int (batch, length); returns float32 (batch, length, V). Needs mixers with a step form
        (every recurrent kind; the transformer's attention has none).
        """
        mixer = self.blocks[0].mixer
        if not hasattr(mixer, "step"):
            raise TypeError(f"{type(mixer).__name__} has no step form to decode with")
        caches = [block.mixer.initial_cache(inputs.shape[0]) for block in self.blocks]

        def step(caches, token):  # token: (batch,)
            x = self.embed(token.astype(jnp.int32))
            new_caches = []
            for block, cache in zip(self.blocks, caches, strict=True):
                cache, x = block.step(cache, x)
                new_caches.append(cache)
            return new_caches, self._logits(x)

        _, logits = jax.lax.scan(step, caches, inputs.T)  # (length, batch, V)
        return jnp.moveaxis(logits, 0, 1)


def next_token_inputs(tokens: jax.Array, bos_token: int) -> jax.Array:
    """`[BOS, tokens[:, :-1]]`: int32 (batch, length), so that output t predicts `tokens[:, t]`."""
    tokens = tokens.astype(jnp.int32)
    bos = jnp.full((tokens.shape[0], 1), bos_token, jnp.int32)
    return jnp.concatenate([bos, tokens[:, :-1]], axis=1)


def token_losses(model: LanguageModel, tokens: jax.Array) -> jax.Array:
    """Model cross-entropy -log q(x_t | x_<t) in nats, float32 (batch, length), for int tokens (batch, length)."""
    logits = model(next_token_inputs(tokens, model.config.bos_token))
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens.astype(jnp.int32))


def count_parameters(params: Any) -> int:
    """Number of scalar parameters in a model or a parameter pytree."""
    if isinstance(params, nnx.Module):
        params = nnx.state(params, nnx.Param)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))

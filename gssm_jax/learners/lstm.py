"""The classic LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000), the reference learner.

Per layer, with input x_t and the previous output h_{t-1}:

  [i, f, g, o] = W x_t + U h_{t-1} + bias
  c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
  h_t = sigmoid(o) * tanh(c_t)

The gates read h_{t-1}, so the recurrence is nonlinear and runs step by step (`lax.scan` over time)
in training as well; W x_t is computed for the whole sequence first. The forget-gate bias starts at
1 (Gers et al.), so the cell keeps its memory early in training. Each block mixes with
out_proj(h_t) in the backbone's pre-norm residual blocks (no MLP).

Recurrent state per token per layer: 2 x `hidden` floats (h_t and c_t), hidden = round(expansion * width).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from gssm_jax.learners.backbone import Layout, dense, weight_init
from gssm_jax.learners.recurrence import RecurrentConfig


@dataclasses.dataclass(frozen=True)
class LSTMConfig(RecurrentConfig):
    """Shape of the LSTM: `RecurrentConfig` with expansion 1 (hidden = width)."""

    expansion: float = 1.0


class LSTMMixer(nnx.Module):
    """One LSTM layer and its output projection: (batch, length, width) -> same shape; `step` on (batch, width)."""

    def __init__(self, config: LSTMConfig, *, rngs: nnx.Rngs):
        self.config = config
        hidden = config.hidden
        self.in_proj = dense(config, config.width, 4 * hidden, rngs, use_bias=True)
        self.in_proj.bias[...] = jnp.zeros(4 * hidden).at[hidden:2 * hidden].set(1.0)
        self.recurrent = nnx.Param(weight_init(config.init_scale)(rngs.params(), (hidden, 4 * hidden)))
        self.out_proj = dense(config, hidden, config.width, rngs)

    def _cell(self, state: tuple[jax.Array, jax.Array], projected: jax.Array):
        """One step: projected = W x_t + bias (batch, 4 hidden) -> ((h_t, c_t), h_t), float32."""
        h, c = state
        gates = projected + h @ self.recurrent[...]
        entry, forget, candidate, output = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(forget) * c + jax.nn.sigmoid(entry) * jnp.tanh(candidate)
        h = jax.nn.sigmoid(output) * jnp.tanh(c)
        return (h, c), h

    def __call__(self, x: jax.Array) -> jax.Array:
        projected = self.in_proj(x).astype(jnp.float32)  # (batch, length, 4 hidden)
        _, h = jax.lax.scan(self._cell, self.initial_cache(x.shape[0]), jnp.moveaxis(projected, 1, 0))
        return self.out_proj(jnp.moveaxis(h, 0, 1).astype(self.config.compute_dtype))

    def initial_cache(self, batch: int) -> tuple[jax.Array, jax.Array]:
        zeros = jnp.zeros((batch, self.config.hidden), jnp.float32)
        return zeros, zeros

    def step(self, state, x: jax.Array):
        state, h = self._cell(state, self.in_proj(x).astype(jnp.float32))
        return state, self.out_proj(h.astype(self.config.compute_dtype))


LAYOUT = Layout(LSTMMixer)  # a stacked LSTM: one LSTM layer per block, no MLP

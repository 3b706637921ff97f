"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs all we needed?", arXiv:2410.01201).

Both drop the hidden state from the gates, so the recurrence is linear in h and trains as a
parallel scan. With gate pre-activations k and a candidate h~_t = W_h x_t (no nonlinearity):

  minGRU:   z_t = sigmoid(k_z)                               h_t = (1 - z_t) h_{t-1} + z_t h~_t
  minLSTM:  f_t = sigmoid(k_f), i_t = sigmoid(k_i),
            f'_t = f_t / (f_t + i_t), i'_t = i_t / (f_t + i_t)  h_t = f'_t h_{t-1} + i'_t h~_t

The normalisation of minLSTM is computed in log space (log sigmoid and logaddexp), so it stays
finite where float32 sigmoids underflow to 0 (the reason the paper gives its log-space form).
Each block mixes with out_proj(silu(g_t) * h_t), where g_t = W_g x_t is an output gate, as in the
blocks of composable-llm (hidden size 3 x width, no convolution, no MLP).

Recurrent state per token per layer: `hidden` floats (h_t), hidden = round(expansion * width).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from gssm_jax.learners import recurrence
from gssm_jax.learners.backbone import Layout, dense
from gssm_jax.learners.recurrence import RecurrentConfig


@dataclasses.dataclass(frozen=True)
class MinRNNConfig(RecurrentConfig):
    """Shape of minGRU / minLSTM: `RecurrentConfig` with composable-llm's expansion 3 (hidden = 3 x width)."""

    expansion: float = 3.0


@dataclasses.dataclass(frozen=True)
class MinGRUConfig(MinRNNConfig):
    """Shape of minGRU (a class of its own so that `registry.build` knows the kind)."""


@dataclasses.dataclass(frozen=True)
class MinLSTMConfig(MinRNNConfig):
    """Shape of minLSTM (a class of its own so that `registry.build` knows the kind)."""


class MinRNNMixer(nnx.Module):
    """The minGRU (`lstm=False`) or minLSTM (`lstm=True`) mixer on (batch, length, width)."""

    def __init__(self, config: MinRNNConfig, lstm: bool, *, rngs: nnx.Rngs):
        self.config, self.lstm = config, lstm
        self.in_proj = dense(config, config.width, (4 if lstm else 3) * config.hidden, rngs)
        self.out_proj = dense(config, config.hidden, config.width, rngs)

    def _coefficients(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(a, b, gate) with h_t = a * h_{t-1} + b; a, b in float32."""
        projected = self.in_proj(x)
        if self.lstm:
            gate, forget, entry, candidate = jnp.split(projected.astype(jnp.float32), 4, axis=-1)
            log_forget, log_entry = jax.nn.log_sigmoid(forget), jax.nn.log_sigmoid(entry)
            log_total = jnp.logaddexp(log_forget, log_entry)
            return jnp.exp(log_forget - log_total), jnp.exp(log_entry - log_total) * candidate, gate
        gate, update, candidate = jnp.split(projected.astype(jnp.float32), 3, axis=-1)
        # 1 - sigmoid(k) = sigmoid(-k), exact where 1 - z would round to 0.
        return jax.nn.sigmoid(-update), jax.nn.sigmoid(update) * candidate, gate

    def _output(self, h: jax.Array, gate: jax.Array) -> jax.Array:
        return self.out_proj((jax.nn.silu(gate) * h).astype(self.config.compute_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        a, b, gate = self._coefficients(x)
        return self._output(recurrence.linear_recurrence(a, b, method=self.config.scan), gate)

    def initial_cache(self, batch: int) -> jax.Array:
        return jnp.zeros((batch, self.config.hidden), jnp.float32)

    def step(self, h: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        a, b, gate = self._coefficients(x)
        h = a * h + b
        return h, self._output(h, gate)


# One mixer per block, no MLP.
MINGRU_LAYOUT = Layout(functools.partial(MinRNNMixer, lstm=False))
MINLSTM_LAYOUT = Layout(functools.partial(MinRNNMixer, lstm=True))

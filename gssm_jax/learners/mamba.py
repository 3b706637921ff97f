"""Mamba: the selective state-space model (Gu & Dao 2023, "Mamba", arXiv:2312.00752).

Each residual block is one Mamba mixer (no MLP). From the normalised input (width D; E D channels,
N states per channel, the paper's E = 2, N = 16):

  [u, z] = W_in x_t                          (E D each)
  u_t = silu(conv4(u)_t)                     (depthwise causal convolution, width 4)
  delta_t = softplus(W_dt (W_r u_t) + b_dt)  (E D; W_r projects to rank R = ceil(D / 16))
  B_t = W_B u_t, C_t = W_C u_t               (N each: input-dependent, the "selection")
  A = -exp(A_log)                            (E D x N, diagonal, negative; S4D-real init A_dn = -(n + 1))
  h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t     (E D x N; zero-order hold for A, Euler for B)
  y_t = C_t . h_t + D_skip * u_t
  output: W_out(y_t * silu(z_t))

b_dt starts at softplus^-1 of a step log-uniform in [0.001, 0.1] (the paper's init).

Recurrent state per token per layer: E D N floats (h_t) + 3 E D (the convolution's previous
inputs at conv_width 4).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from gssm_jax.errors import UserError
from gssm_jax.learners import recurrence
from gssm_jax.learners.backbone import Layout, dense
from gssm_jax.learners.recurrence import RecurrentConfig
from gssm_jax.learners.selective_scan import selective_scan

STEP_RANGE = (1e-3, 1e-1)  # initial delta, log-uniform (the paper's dt_min, dt_max)


@dataclasses.dataclass(frozen=True)
class MambaConfig(RecurrentConfig):
    """Shape of Mamba: `RecurrentConfig` (expansion E = 2, the paper's) plus:

    state_size: N, states per channel (>= 1).
    conv_width: taps of the causal convolution (>= 1).
    """

    expansion: float = 2.0
    state_size: int = 16
    conv_width: int = 4

    def __post_init__(self):
        super().__post_init__()
        if self.state_size < 1 or self.conv_width < 1:
            raise UserError("config.model.state_size and conv_width must be >= 1")

    @property
    def step_rank(self) -> int:
        """R, the rank of delta's projection: ceil(width / 16) as in the paper."""
        return math.ceil(self.width / 16)


def _initial_step_bias(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    low, high = STEP_RANGE
    step = jnp.exp(jax.random.uniform(key, shape, dtype, math.log(low), math.log(high)))
    return step + jnp.log(-jnp.expm1(-step))  # softplus^-1(step)


class MambaMixer(nnx.Module):
    """The Mamba mixer: (batch, length, width) -> same shape; `step` on one token (batch, width)."""

    def __init__(self, config: MambaConfig, *, rngs: nnx.Rngs):
        self.config = config
        channels, states, rank = config.hidden, config.state_size, config.step_rank
        self.in_proj = dense(config, config.width, 2 * channels, rngs)
        self.conv = recurrence.CausalConv(channels, config.conv_width, config.compute_dtype, rngs=rngs)
        self.select_proj = dense(config, channels, rank + 2 * states, rngs)
        self.step_proj = dense(config, rank, channels, rngs, use_bias=True)
        self.step_proj.bias[...] = _initial_step_bias(rngs.params(), (channels,))
        # log(-A) stored flat (N E D,): the optimizer decays only matrices (ndim >= 2), and decaying A
        # towards 0 would push every channel towards never forgetting.
        self.log_decay = nnx.Param(jnp.log(jnp.repeat(jnp.arange(1.0, states + 1), channels)))
        self.skip = nnx.Param(jnp.ones(channels))
        self.out_proj = dense(config, channels, config.width, rngs)

    def _selection(self, u: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """delta (..., E D), B (..., N) and C (..., N) from the convolved input u (..., E D), float32."""
        rank, states = self.config.step_rank, self.config.state_size
        low_rank, input_matrix, output_matrix = jnp.split(self.select_proj(u), [rank, rank + states], axis=-1)
        step = jax.nn.softplus(self.step_proj(low_rank).astype(jnp.float32))
        return step, input_matrix.astype(jnp.float32), output_matrix.astype(jnp.float32)

    def _decay(self) -> jax.Array:
        """A = -exp(log_decay): (N, E D), negative."""
        return -jnp.exp(self.log_decay[...]).reshape(self.config.state_size, -1)

    def _coefficients(self, step: jax.Array, u: jax.Array, input_matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(a, b) of h_t = a h_{t-1} + b, (..., N, E D): a = exp(delta A), b = delta B u.

        States lead channels (N, E D) so that the readout C . h sums over a major axis, vectorised
        over the E D channels (about 1.4x faster on CPU than (E D, N) with its length-N inner sums).
        """
        return (jnp.exp(step[..., None, :] * self._decay()),
                (step * u.astype(jnp.float32))[..., None, :] * input_matrix[..., :, None])

    def _recurrence(self, h, inputs):
        """One token: (h_{t-1}, (delta_t, u_t, B_t, C_t)) -> (h_t, C_t . h_t), h (batch, N, E D)."""
        step, u, input_matrix, output_matrix = inputs
        a, b = self._coefficients(step, u, input_matrix)
        h = a * h + b
        return h, _readout(h, output_matrix)

    def _output(self, u: jax.Array, readout: jax.Array, z: jax.Array) -> jax.Array:
        y = readout + self.skip[...] * u.astype(jnp.float32)
        return self.out_proj((y * jax.nn.silu(z.astype(jnp.float32))).astype(self.config.compute_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        u, z = jnp.split(self.in_proj(x), 2, axis=-1)
        u = jax.nn.silu(self.conv(u))
        step, input_matrix, output_matrix = self._selection(u)
        method = recurrence.resolve_method(self.config.scan)
        if method == "sequential":
            # One token at a time with a hand-written gradient that keeps one state per 32 tokens
            # (`selective_scan`): on CPU its backward pass is ~2x faster than autodiff of the per-token
            # scan, which kept every state (benchmarks/RESULTS.md).
            time_major = [jnp.moveaxis(array, 1, 0) for array in (step, u.astype(jnp.float32), input_matrix,
                                                                     output_matrix)]
            readout = jnp.moveaxis(selective_scan(self._decay(), *time_major), 0, 1)
        else:
            h = recurrence.linear_recurrence(*self._coefficients(step, u, input_matrix), method=method)
            readout = _readout(h, output_matrix)
        return self._output(u, readout, z)

    def _zero_state(self, batch: int) -> jax.Array:
        return jnp.zeros((batch, self.config.state_size, self.config.hidden))

    def initial_cache(self, batch: int) -> tuple[jax.Array, jax.Array]:
        return self.conv.initial_cache(batch, self.config.hidden, self.config.compute_dtype), self._zero_state(batch)

    def step(self, cache, x: jax.Array):
        conv_cache, h = cache
        u, z = jnp.split(self.in_proj(x), 2, axis=-1)
        conv_cache, u = self.conv.step(conv_cache, u)
        u = jax.nn.silu(u)
        step, input_matrix, output_matrix = self._selection(u)
        h, readout = self._recurrence(h, (step, u, input_matrix, output_matrix))
        return (conv_cache, h), self._output(u, readout, z)


def _readout(h: jax.Array, output_matrix: jax.Array) -> jax.Array:
    """C . h: h (..., N, E D), C (..., N) -> (..., E D)."""
    return jnp.sum(h * output_matrix[..., :, None], axis=-2)


LAYOUT = Layout(MambaMixer)  # one Mamba mixer per block, no MLP

"""Hawk: the RG-LRU recurrent block and a gated MLP (De et al. 2024, "Griffin", arXiv:2402.19427).

Each residual block is a temporal-mixing block then a gated MLP, both pre-norm. The temporal block
has two branches from the normalised input x (width D, hidden size D_rnn = expansion x D, the
paper's 4/3, rounded up to a multiple of `heads`):

  gate branch:       g_t = gelu(W_g x_t)
  recurrent branch:  u_t = conv4(W_u x_t)   (depthwise causal temporal convolution, width 4)
                     r_t = sigmoid(W_a u_t + b_a),  i_t = sigmoid(W_x u_t + b_x)   (W_a, W_x block-diagonal,
                                                                                    `heads` blocks)
                     log a_t = -c r_t softplus(-Lambda),  c = 8   (a_t = sigma(Lambda)^(c r_t))
                     h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t u_t)
  output:            out_proj(g_t * h_t)

Lambda starts where sigma(Lambda)^c is uniform in [0.9, 0.999] (the paper's init), and the
square root's derivative is bounded (it is infinite where a_t -> 1). The MLP is the backbone's
gated MLP (`mlp_ratio` x width hidden units; SiLU gate where the paper uses GeLU).

Recurrent state per token per layer: D_rnn floats (h_t) + (conv_width - 1) x D_rnn (the convolution's
previous inputs): 4 x D_rnn at the default conv_width 4.
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

GATE_EXPONENT = 8.0  # the paper's c
MAX_SQRT_DERIVATIVE = 1000.0


@dataclasses.dataclass(frozen=True)
class HawkConfig(RecurrentConfig):
    """Shape of Hawk: `RecurrentConfig` (expansion 4/3, the paper's) plus:

    heads: blocks of the block-diagonal gate matrices (>= 1); the hidden size is a multiple of it.
    mlp_ratio: gated-MLP hidden size as a multiple of width (> 0).
    conv_width: taps of the temporal convolution (>= 1).
    """

    expansion: float = 4 / 3
    heads: int = 4
    mlp_ratio: float = 4.0
    conv_width: int = 4

    def __post_init__(self):
        super().__post_init__()
        if self.heads < 1 or self.conv_width < 1 or self.mlp_ratio <= 0:
            raise UserError("config.model.heads and conv_width must be >= 1 and mlp_ratio > 0")

    @property
    def hidden(self) -> int:
        return self.heads * math.ceil(self.expansion * self.width / self.heads)

    @property
    def mlp_hidden(self) -> int:  # read by backbone.GatedMLP
        return int(round(self.mlp_ratio * self.width))


@jax.custom_jvp
def sqrt_bounded_derivative(x: jax.Array) -> jax.Array:
    """sqrt(x), with the derivative capped at MAX_SQRT_DERIVATIVE (it diverges as x -> 0)."""
    return jnp.sqrt(x)


@sqrt_bounded_derivative.defjvp
def _sqrt_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    floor = 1 / (4 * MAX_SQRT_DERIVATIVE**2)  # 0.5 / sqrt(floor) = MAX_SQRT_DERIVATIVE
    return jnp.sqrt(x), dx * 0.5 / jnp.sqrt(jnp.maximum(x, floor))


def _initial_lambda(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Lambda with sigma(Lambda)^c ~ Uniform[0.9, 0.999]: softplus(-Lambda) = -log(u) / c."""
    u = jax.random.uniform(key, shape, dtype, 0.9, 0.999)
    return -jnp.log(jnp.expm1(-jnp.log(u) / GATE_EXPONENT))


class RGLRUMixer(nnx.Module):
    """Hawk's temporal-mixing block: (batch, length, width) -> same shape; `step` on one token (batch, width)."""

    def __init__(self, config: HawkConfig, *, rngs: nnx.Rngs):
        self.config = config
        hidden, heads = config.hidden, config.heads
        self.gate_proj = dense(config, config.width, hidden, rngs)
        self.in_proj = dense(config, config.width, hidden, rngs)
        self.conv = recurrence.CausalConv(hidden, config.conv_width, config.compute_dtype, rngs=rngs)
        block = (heads, hidden // heads, 2 * (hidden // heads))  # both gates' blocks side by side
        per_block_fan_in = nnx.initializers.variance_scaling(config.init_scale**2, "fan_in", "truncated_normal",
                                                             batch_axis=(0,))
        self.gate_kernels = nnx.Param(per_block_fan_in(rngs.params(), block))
        self.recurrence_gate_bias = nnx.Param(jnp.zeros(hidden))
        self.input_gate_bias = nnx.Param(jnp.zeros(hidden))
        self.decay_logit = nnx.Param(_initial_lambda(rngs.params(), (hidden,)))
        self.out_proj = dense(config, hidden, config.width, rngs)

    def _coefficients(self, u: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(a, b) of h_t = a h_{t-1} + b from the convolved input u (..., hidden), float32."""
        heads = self.config.heads
        u = u.astype(jnp.float32)
        blocks = u.reshape(*u.shape[:-1], heads, -1)  # (..., heads, hidden / heads)
        gates = jnp.einsum("...hi,hij->...hj", blocks, self.gate_kernels[...])
        recurrence_gate, input_gate = jnp.split(gates, 2, axis=-1)
        recurrence_gate = jax.nn.sigmoid(recurrence_gate.reshape(u.shape) + self.recurrence_gate_bias[...])
        input_gate = jax.nn.sigmoid(input_gate.reshape(u.shape) + self.input_gate_bias[...])
        log_a = -GATE_EXPONENT * recurrence_gate * jax.nn.softplus(-self.decay_logit[...])
        multiplier = sqrt_bounded_derivative(-jnp.expm1(2 * log_a))  # sqrt(1 - a^2), accurate as a -> 1
        return jnp.exp(log_a), multiplier * input_gate * u

    def _output(self, x: jax.Array, h: jax.Array) -> jax.Array:
        gate = jax.nn.gelu(self.gate_proj(x))
        return self.out_proj(gate * h.astype(gate.dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        a, b = self._coefficients(self.conv(self.in_proj(x)))
        return self._output(x, recurrence.linear_recurrence(a, b, method=self.config.scan))

    def initial_cache(self, batch: int) -> tuple[jax.Array, jax.Array]:
        hidden = self.config.hidden
        return self.conv.initial_cache(batch, hidden, self.config.compute_dtype), jnp.zeros((batch, hidden))

    def step(self, cache, x: jax.Array):
        conv_cache, h = cache
        conv_cache, u = self.conv.step(conv_cache, self.in_proj(x))
        a, b = self._coefficients(u)
        h = a * h + b
        return (conv_cache, h), self._output(x, h)


LAYOUT = Layout(RGLRUMixer, mlp=True)  # the temporal-mixing block, then the backbone's gated MLP

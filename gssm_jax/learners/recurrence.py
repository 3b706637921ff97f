"""What every recurrent learner shares: its config fields, the linear recurrence, the causal depthwise convolution.

A recurrent learner is the backbone (`gssm_jax.learners.backbone`) with a recurrent sequence mixer.
Every such mixer has two forms: `mixer(x)` over a whole (batch, length, width) sequence, the parallel
form used in training, and `mixer.step(cache, x_t)` over one token (batch, width), the recurrence
itself, which `LanguageModel.decode` runs with `lax.scan` over time (a test pins the two together).

`linear_recurrence` computes h_t = a_t * h_{t-1} + b_t (elementwise, h_{-1} = h0 or 0) along the
time axis of (batch, length, ...) arrays by one of three methods, all equal up to float rounding:

  "associative"  `lax.associative_scan` over the composition of affine maps h -> a h + b: O(log T)
                 depth, the parallel form the papers train with;
  "sequential"   `lax.scan` over time, one step per token: O(T) depth, the least memory traffic;
  "chunked"      associative scans inside chunks of `CHUNK` tokens, a sequential scan over the chunks'
                 end states, then each chunk's prefix maps applied to its start state.

Which is fastest depends on the backend (benchmarks/RESULTS.md records what each gave);
`resolve_method("auto")` returns the measured choice. The composition never divides by a cumulative
product (unlike the cumsum-of-ratios form that the log-space minGRU/minLSTM recipe stabilises), so
the linear-space scan is stable for any 0 <= a_t <= 1.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from gssm_jax.errors import UserError
from gssm_jax.learners.backbone import BackboneConfig

METHODS = ("associative", "sequential", "chunked")
CHUNK = 64
# Fastest method per backend. CPU: measured with benchmarks.learners (benchmarks/RESULTS.md): the
# sequential scan wins or ties for every kind at T=256 and T=2048 (one core-friendly pass, no
# log-depth copies). GPU/TPU: not measured yet; the associative scan's O(log T) depth is what the
# papers rely on there (`python -m benchmarks.learners --methods=associative,sequential,chunked`).
FASTEST = {"cpu": "sequential", "gpu": "associative", "tpu": "associative"}


def check_method(method: str) -> None:
    if method not in ("auto", *METHODS):
        raise ValueError(f"config.model.scan={method!r}; valid methods are auto, {', '.join(METHODS)}")


@dataclasses.dataclass(frozen=True)
class RecurrentConfig(BackboneConfig):
    """Fields common to the recurrent learners: `BackboneConfig` plus (each kind's config adds its own):

    scan: how linear recurrences run in training: "auto" (the fastest measured on the backend),
      "associative", "sequential" or "chunked" (`METHODS`); the linear recurrences always run in float32.
    expansion: the mixer's hidden size as a multiple of `width` (> 0); each kind sets its default.
    """

    scan: str = "auto"
    expansion: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.expansion <= 0:
            raise UserError(f"config.model.expansion={self.expansion} must be > 0")
        check_method(self.scan)

    @property
    def hidden(self) -> int:
        """The mixer's hidden size, round(expansion * width) (at least 1)."""
        return max(1, int(round(self.expansion * self.width)))


def resolve_method(method: str) -> str:
    """`method`, or for "auto" the method measured fastest on the default backend."""
    check_method(method)
    return FASTEST.get(jax.default_backend(), "associative") if method == "auto" else method


def _compose(earlier, later):
    """The affine map `later ∘ earlier`: h -> a_l (a_e h + b_e) + b_l."""
    a_earlier, b_earlier = earlier
    a_later, b_later = later
    return a_later * a_earlier, a_later * b_earlier + b_later


def _sequential(a: jax.Array, b: jax.Array, h0: jax.Array) -> jax.Array:
    def step(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    _, h = jax.lax.scan(step, h0, (jnp.moveaxis(a, 1, 0), jnp.moveaxis(b, 1, 0)))
    return jnp.moveaxis(h, 0, 1)


def _associative(a: jax.Array, b: jax.Array, h0: jax.Array) -> jax.Array:
    a_prefix, b_prefix = jax.lax.associative_scan(_compose, (a, b), axis=1)
    return a_prefix * h0[:, None] + b_prefix


def _chunked(a: jax.Array, b: jax.Array, h0: jax.Array) -> jax.Array:
    batch, length = a.shape[:2]
    chunk = min(CHUNK, length)
    pad = -length % chunk
    if pad:  # identity maps (a=1, b=0) after the end leave the prefixes unchanged
        a = jnp.concatenate([a, jnp.ones((batch, pad, *a.shape[2:]), a.dtype)], axis=1)
        b = jnp.concatenate([b, jnp.zeros((batch, pad, *b.shape[2:]), b.dtype)], axis=1)
    shape = (batch, a.shape[1] // chunk, chunk, *a.shape[2:])
    a_prefix, b_prefix = jax.lax.associative_scan(_compose, (a.reshape(shape), b.reshape(shape)), axis=2)
    # State at the end of each chunk, then shifted by one chunk: the state each chunk starts from.
    ends = _sequential(a_prefix[:, :, -1], b_prefix[:, :, -1], h0)  # (batch, chunks, ...)
    starts = jnp.concatenate([h0[:, None], ends[:, :-1]], axis=1)
    h = a_prefix * starts[:, :, None] + b_prefix
    return h.reshape(batch, -1, *a.shape[2:])[:, :length]


def linear_recurrence(a: jax.Array, b: jax.Array, h0: jax.Array | None = None, method: str = "auto") -> jax.Array:
    """h_t = a_t * h_{t-1} + b_t for t = 0..T-1, with h_{-1} = h0 (zeros if None).

    a, b: (batch, length, ...) of one float dtype; h0: (batch, ...). Returns h: (batch, length, ...).
    """
    method = resolve_method(method)
    h0 = jnp.zeros((a.shape[0], *a.shape[2:]), a.dtype) if h0 is None else h0
    return {"associative": _associative, "sequential": _sequential, "chunked": _chunked}[method](a, b, h0)


class CausalConv(nnx.Module):
    """Depthwise causal convolution over time: y_t = bias + sum_k kernel[k] * x_{t-K+1+k} per channel.

    `__call__` maps (batch, length, channels) at once; `step` maps one token given the K-1 previous
    inputs, for the step-by-step recurrence. The parameters and their init are nnx.Conv's (kernel
    (K, 1, channels), bias (channels,)), but `__call__` sums K shifted copies instead of calling XLA's
    grouped convolution: on CPU its gradient took 0.82 s against 0.08 s for the shifted sums (batch 16 x
    2048 x 188 channels, benchmarks/RESULTS.md).
    """

    def __init__(self, channels: int, width: int, dtype, *, rngs: nnx.Rngs):
        self.width = width
        self.conv = nnx.Conv(channels, channels, kernel_size=(width,), padding="CAUSAL",
                             feature_group_count=channels, dtype=dtype, rngs=rngs)

    def _taps(self, dtype) -> tuple[jax.Array, jax.Array]:
        """kernel (K, channels), oldest input first, and bias (channels,), in the computation dtype."""
        dtype = self.conv.dtype or dtype
        return self.conv.kernel[...][:, 0, :].astype(dtype), self.conv.bias[...].astype(dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = self._taps(x.dtype)
        length = x.shape[1]
        padded = jnp.pad(x.astype(kernel.dtype), ((0, 0), (self.width - 1, 0), (0, 0)))
        return bias + sum(padded[:, k:k + length] * kernel[k] for k in range(self.width))

    def initial_cache(self, batch: int, channels: int, dtype) -> jax.Array:
        """The K-1 inputs before the sequence starts (zeros, as the causal padding): (batch, K-1, channels)."""
        return jnp.zeros((batch, self.width - 1, channels), dtype)

    def step(self, cache: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One token x (batch, channels) -> (new cache, y (batch, channels))."""
        window = jnp.concatenate([cache, x[:, None].astype(cache.dtype)], axis=1)  # (batch, K, channels)
        kernel, bias = self._taps(window.dtype)
        return window[:, 1:], jnp.einsum("bkc,kc->bc", window, kernel.astype(window.dtype)) + bias.astype(window.dtype)

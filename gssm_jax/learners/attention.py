"""Causal self-attention, one reference and memory-lean implementations chosen by `config.model.attention`.

Every implementation maps query, key, value (batch, length, heads, head_size) to the attention output
(batch, length, heads, head_size): position t attends to positions <= t, scores scaled by
1/sqrt(head_size), softmax in float32. They differ in memory and speed, not in the function:

  xla        `jax.nn.dot_product_attention` (XLA's): the reference. Materialises the (batch, heads,
             length, length) scores and keeps them for the backward pass: memory O(length^2).
  blockwise  `blockwise_attention`: query/key blocks, online softmax, blocks above the diagonal skipped,
             backward recomputing each block: memory O(length x block). Any backend and dtype.
  cudnn      `jax.nn.dot_product_attention(implementation="cudnn")`: cuDNN's fused flash attention;
             NVIDIA GPUs (compute capability >= 8.0), bfloat16/float16, head size a multiple of 8, <= 128.
  auto       the fastest available for the backend, dtype and length (`choose`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gssm_jax.errors import UserError
from gssm_jax.learners.blockwise_attention import blockwise_attention

IMPLEMENTATIONS = ("auto", "xla", "blockwise", "cudnn")
FIELD = "config.model.attention"
# Block size of `blockwise` on CPU: 64 x 64 measured fastest of 16-256 at T=256 and T=2048 (head size 16,
# batch 16, 4 heads; benchmarks/RESULTS.md). On accelerators 128: fewer, larger loop iterations.
CPU_BLOCK = 64
ACCELERATOR_BLOCK = 128
# On accelerators without cuDNN, `auto` keeps XLA's reference up to this length: its (T, T) scores are
# small there, and XLA's fused kernels beat a loop of small blocks.
ACCELERATOR_XLA_MAX_LENGTH = 512


class Choice(NamedTuple):
    """A resolved implementation: its name (never "auto") and, for blockwise, the block size."""

    name: str
    block_size: int = 0


def check_name(implementation: str) -> None:
    """ValueError (one line naming config.model.attention) unless `implementation` is a known name."""
    if implementation not in IMPLEMENTATIONS:
        raise UserError(f"{FIELD}={implementation!r}; valid choices are {', '.join(IMPLEMENTATIONS)}")


def _cudnn_unavailable(platform: str, compute_capability: str | None, dtype, head_size: int) -> str | None:
    """Why cuDNN flash attention cannot run here (a fix for the user), or None if it can."""
    if platform != "gpu" or compute_capability is None:
        return f"needs an NVIDIA GPU (this backend is {platform})"
    try:
        major = int(str(compute_capability).split(".")[0])
    except ValueError:
        return f"needs an NVIDIA GPU (compute capability {compute_capability!r})"
    if major < 8:
        return f"needs compute capability >= 8.0 (this GPU has {compute_capability})"
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return "needs config.model.dtype=bfloat16 (cuDNN flash attention has no float32 kernel)"
    if head_size % 8 or head_size > 128:
        return f"needs a head size (width / heads) that is a multiple of 8 and <= 128, not {head_size}"
    return None


def _device_facts() -> tuple[str, str | None]:
    device = jax.devices()[0]
    return device.platform, getattr(device, "compute_capability", None)


def choose(implementation: str, dtype, length: int, head_size: int, platform: str | None = None,
           compute_capability: str | None = None) -> Choice:
    """The implementation `implementation` resolves to on this backend (or on `platform` if given).

    auto: cudnn where available; else on CPU blockwise (2.4x faster than the reference at T=256 and
    9x at T=2048, forward + backward); else (GPU without cuDNN's conditions, TPU) the reference up to
    ACCELERATOR_XLA_MAX_LENGTH tokens and blockwise beyond (H100, float32, T=2048: blockwise 1.08x
    faster and 7 GiB instead of 52; T=256: the reference 1.03x faster).

    Raises:
      ValueError: one line naming config.model.attention, for an unknown name or an explicit choice
        this backend, dtype or head size cannot run.
    """
    check_name(implementation)
    if platform is None:
        platform, compute_capability = _device_facts()
    block = CPU_BLOCK if platform == "cpu" else ACCELERATOR_BLOCK
    cudnn_problem = _cudnn_unavailable(platform, compute_capability, dtype, head_size)
    if implementation == "cudnn" and cudnn_problem:
        raise UserError(f"{FIELD}='cudnn' {cudnn_problem}; use auto, xla or blockwise")
    if implementation == "auto":
        if cudnn_problem is None:
            return Choice("cudnn")
        if platform != "cpu" and length <= ACCELERATOR_XLA_MAX_LENGTH:
            return Choice("xla")
        return Choice("blockwise", block)
    return Choice(implementation, block if implementation == "blockwise" else 0)


def reference_attention(query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
    """XLA's causal attention (`jax.nn.dot_product_attention`), the reference every other one is tested against."""
    return jax.nn.dot_product_attention(query, key, value, is_causal=True, implementation="xla")


def causal_attention(query: jax.Array, key: jax.Array, value: jax.Array, implementation: str = "auto"
                     ) -> jax.Array:
    """Causal attention (batch, length, heads, head_size) -> same shape, by `implementation` (resolved by `choose`)."""
    choice = choose(implementation, query.dtype, query.shape[1], query.shape[-1])
    if choice.name == "blockwise":
        return blockwise_attention(query, key, value, choice.block_size)
    if choice.name == "cudnn":
        return jax.nn.dot_product_attention(query, key, value, is_causal=True, implementation="cudnn")
    return reference_attention(query, key, value)

"""The JAX sampler: token batches of a GSSM, jit-compiled, batch-parallel, sharded on device.

Semantics: before the first step every previous value is 0; at step t each hidden
node is drawn (in `graph.hidden_order`, so same-step hidden parents are already drawn) from its own
previous value, its hidden parents at t and, for a parent X, the previous token X[t-1]; then X[t]
is drawn from its parents at t. The emitted tokens are X[0..T-1]. With `initial_state="stationary"`
the chain first runs `burn_in` = B steps whose tokens are not emitted, and the emitted tokens are
X[B..B+T-1] (`gssm_jax.gssm.initial_state`); the random words of step t are the same either way.

Random bits are counter-based: node j of sequence b at step t uses word j % 2 of threefry-2x32
(the generator behind `jax.random`, written here in plain uint32 ops, which XLA fuses and
vectorises several times faster on CPU) keyed by `key` at the counter (t * ceil(nodes / 2) + j // 2,
b). They are therefore a pure function of (key, sequence index, step, node), so a batch is
bit-identical however its rows are split across devices, and the first rows and steps of a larger
batch equal a smaller batch.

The inverse-CDF draws are `gssm_jax.sampling.tables`; the random words are threefry-2x32
(`gssm_jax.threefry`) keyed by `keys.sampler_bits_key(key)`.

`context` nodes get a fresh kernel for every sequence b, drawn with
`kernels.sample_node_kernel(keys.context_sequence_key(keys.context_node_key(key, node_index), b))`. (Composable-llm
redrew them per batch or per step; here they are fixed within a sequence, so a model must infer
them in context.)


Performance on CPU (`python -m benchmarks.sampler`): the loop body is one small fused kernel per
node and random word, so the shape of each matters. A draw gathers its whole threshold row (up to
`ROW_GATHER_MAX_STATES` states; one contiguous read, compares vectorised; wider rows bisect), and
the random words are drawn one step ahead into the loop carry, which XLA always materialises (fused
into a draw, threefry would be recomputed for every threshold of the row). Sampling many batches
from the same kernels, pass `sampling_tables(graph, kernels)` instead of the kernels: building the
thresholds is the only per-call setup (~0.1 s for the 8x4/V64 graph's X). XLA's CPU thread pool can
be slower than one thread on this loop, most of all on a loaded machine: compare with `taskset -c 0`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from gssm_jax import keys
from gssm_jax.errors import UserError
from gssm_jax.gssm.graph import GraphSpec, token_dtype
from gssm_jax.gssm.initial_state import DEFAULT_BURN_IN, burn_in_steps
from gssm_jax.gssm.kernels import Kernels, check_rows
from gssm_jax.sampling.tables import LARGEST_WORD, SamplingTables, draw_from_thresholds, node_thresholds
from gssm_jax.threefry import threefry_2x32


def _strides(sizes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(math.prod(sizes[axis + 1:])) for axis in range(len(sizes)))


def sample_tokens_fn(key: jax.Array, graph: GraphSpec, kernels: Kernels | SamplingTables, batch_size: int,
                     length: int, *,
                     return_latents: bool = False, first_row: int | jax.Array = 0, initial_state: str = "zeros",
                     burn_in: int = DEFAULT_BURN_IN):
    """The pure sampler (not jitted): rows `first_row .. first_row + batch_size - 1` of the batch of `key`.

    Call it inside your own `jit` / `shard_map` (graph, batch_size, length static); `sample_tokens`
    is this function jitted, with the sharding handled.

    Args:
      key: a `jax.random.key` (or legacy uint32 key); the batch is a pure function of it.
      graph: the graph (static).
      kernels: `{name: kernel}` from `kernels.sample_kernels` (context nodes' entries are ignored), or
        their `sampling_tables` (skips rebuilding the thresholds).
      batch_size: number of sequences produced here.
      length: number of tokens T per sequence.
      return_latents: also return the hidden values.
      first_row: global index of the first sequence (selects the random counters).
      initial_state: "zeros" (every previous value 0 before the first emitted token) or "stationary" (the
        chain runs `burn_in` unobserved steps first); `gssm_jax.gssm.initial_state`.
      burn_in: steps run before the first emitted token under "stationary" (static; ignored under "zeros").

    Returns:
      tokens `(batch_size, length)` (uint8 if X has <= 256 states, else int32), and with
      `return_latents` a dict `{hidden name: int32 (batch_size, length)}`.
    """
    names = (*graph.hidden_order, graph.observed)
    pairs_per_step = -(-len(names) // 2)  # threefry yields two words per counter
    bits_key = keys.sampler_bits_key(key)
    rows = jnp.asarray(first_row, jnp.uint32) + jnp.arange(batch_size, dtype=jnp.uint32)
    thresholds = node_thresholds(key, graph, kernels, rows)
    # A context node's row index is offset by its sequence's own table.
    offsets = {node.name: jnp.arange(batch_size, dtype=jnp.int32) * np.int32(math.prod(graph.input_sizes(node.name)))
               for node in graph.nodes if node.mode == "context"}

    def step_words(t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The two uint32 (pairs, batch) words of every counter pair at step t."""
        counters = t * np.uint32(pairs_per_step) + jnp.arange(pairs_per_step, dtype=jnp.uint32)
        words = threefry_2x32((bits_key[0], bits_key[1]), counters[:, None], rows[None, :])
        return tuple(jnp.minimum(word, LARGEST_WORD) for word in words)

    def step(carry: tuple[dict, tuple[jax.Array, jax.Array]], t: jax.Array):
        """One time step for the batch: int32 (batch,) values per node.

        The step's random words arrive in the carry, drawn one step ahead: a loop carry is
        always materialised, whereas XLA would fuse threefry into every consumer, recomputing it
        for each of the `states - 1` thresholds a draw compares.
        """
        previous, words = carry
        current: dict[str, jax.Array] = {}
        for index, name in enumerate(names):
            values = [previous[p] if p in (name, graph.observed) else current[p] for p in graph.inputs(name)]
            row = sum(value * np.int32(stride)
                      for value, stride in zip(values, _strides(graph.input_sizes(name)), strict=True))
            row = row + offsets[name] if name in offsets else row
            word = words[index % 2][index // 2]  # node j: word j % 2 of counter pair j // 2
            current[name] = draw_from_thresholds(thresholds[name], row, word)
        emitted = {name: current[name] for name in names if return_latents or name == graph.observed}
        emitted[graph.observed] = emitted[graph.observed].astype(token_dtype(graph.vocab_size))
        return (current, step_words(t + np.uint32(1))), emitted

    carry = ({name: jnp.zeros((batch_size,), jnp.int32) for name in names}, step_words(jnp.uint32(0)))
    steps = burn_in_steps(initial_state, burn_in)
    if steps:  # the unobserved steps: nothing is emitted, so XLA drops the outputs of `step`
        carry = lax.fori_loop(np.uint32(0), np.uint32(steps), lambda t, carry: step(carry, t)[0], carry)
    _, emitted = lax.scan(step, carry, jnp.arange(steps, steps + length, dtype=jnp.uint32))
    emitted = {name: values.T for name, values in emitted.items()}
    tokens = emitted.pop(graph.observed)
    return (tokens, emitted) if return_latents else tokens


def _batch_axes(sharding: NamedSharding) -> tuple[str, ...]:
    """Mesh axes that split the batch (the first entry of the sharding's spec)."""
    if not isinstance(sharding, NamedSharding):
        raise TypeError(f"sharding must be a jax.sharding.NamedSharding (e.g. P('data') on a mesh), got {sharding!r}")
    spec = tuple(sharding.spec)
    if any(entry is not None for entry in spec[1:]):
        raise UserError(f"sharding.spec is {sharding.spec}; the sampler splits only the batch axis: use P('data')")
    first = spec[0] if spec else None
    return () if first is None else (first,) if isinstance(first, str) else tuple(first)


@functools.partial(jax.jit, static_argnames=("graph", "batch_size", "length", "return_latents", "sharding",
                                             "burn_in"))
def _sample_jitted(key, kernels, graph, batch_size, length, return_latents, sharding, burn_in):
    # burn_in: the resolved steps (0 under "zeros"), so both initial states with no burn-in share one compilation.
    initial = {"initial_state": "stationary", "burn_in": burn_in}
    axes = () if sharding is None else _batch_axes(sharding)
    if not axes:
        return sample_tokens_fn(key, graph, kernels, batch_size, length, return_latents=return_latents, **initial)
    shards = math.prod(sharding.mesh.shape[axis] for axis in axes)
    local = batch_size // shards

    def per_device(key, kernels):
        first_row = lax.axis_index(axes) * local
        return sample_tokens_fn(key, graph, kernels, local, length, return_latents=return_latents,
                                first_row=first_row, **initial)

    spec = PartitionSpec(axes[0] if len(axes) == 1 else axes)
    out_specs = (spec, {name: spec for name in graph.hidden_order}) if return_latents else spec
    return jax.shard_map(per_device, mesh=sharding.mesh, in_specs=(PartitionSpec(), PartitionSpec()),
                         out_specs=out_specs, check_vma=False)(key, kernels)


def sample_tokens(key: jax.Array, graph: GraphSpec, kernels: Kernels | SamplingTables, batch_size: int,
                  length: int, *,
                  return_latents: bool = False, sharding: NamedSharding | None = None, initial_state: str = "zeros",
                  burn_in: int = DEFAULT_BURN_IN):
    """Samples a batch of token sequences of the GSSM (jit-compiled; safe to call under an outer jit).

    Args:
      key: a `jax.random.key`; the batch is a pure function of `(key, kernels)`.
      graph: the graph (static: each new `graph.structure`, batch_size or length compiles once).
      kernels: `{name: kernel}` from `kernels.sample_kernels` (context nodes are redrawn per
        sequence), or `sampling_tables(graph, kernels)` to skip rebuilding the inverse-CDF thresholds
        at every call (worth it on large tables when sampling many batches from the same kernels).
      batch_size: number of sequences (global, across devices).
      length: number of tokens T per sequence.
      return_latents: also return the hidden values.
      sharding: optional `NamedSharding(mesh, P("data"))`: each device samples its own rows on
        device; the result is bit-identical to `sharding=None`.
      initial_state: "zeros" (default: every previous value 0 before the first emitted token) or
        "stationary" (`burn_in` unobserved steps first; `gssm_jax.gssm.initial_state`), as
        `config.data.initial_state`.
      burn_in: steps run before the first emitted token under "stationary" (`config.data.burn_in`).

    Returns:
      tokens `(batch_size, length)`: uint8 if X has <= 256 states, else int32; with
      `return_latents`, `(tokens, {hidden name: int32 (batch_size, length)})`.

    Raises:
      ValueError: a bad size, or (outside an outer jit) a conditional row of `kernels` that is not a
        probability row (`kernels.check_rows`).
    """
    for field, value in (("batch_size", batch_size), ("length", length)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise UserError(f"{field} must be a positive integer, got {value!r}")
    steps = burn_in_steps(initial_state, burn_in)
    if batch_size > 2**32 or (steps + length) * -(-len(graph.nodes) // 2) > 2**32:
        raise UserError(f"batch_size={batch_size}, length={length} (after {steps} burn-in steps) exceed the sampler's "
                        "32-bit random counters; sample in several calls with different keys")
    if sharding is not None:
        shards = math.prod(sharding.mesh.shape[axis] for axis in _batch_axes(sharding))
        if batch_size % shards:
            raise UserError(f"batch_size={batch_size} is not divisible by the {shards} devices of the sharding; "
                            f"use a multiple of {shards}")
    if not isinstance(kernels, SamplingTables):
        check_rows(graph, kernels)
    return _sample_jitted(key, kernels, graph.structure, int(batch_size), int(length), bool(return_latents),
                          sharding, steps)

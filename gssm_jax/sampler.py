"""The JAX sampler: token batches of a GSSM, jit-compiled, batch-parallel, sharded on device.

Semantics are DESIGN.md §2: before the first step every previous value is 0; at step t each hidden
node is drawn (in `graph.hidden_order`, so same-step hidden parents are already drawn) from its own
previous value, its hidden parents at t and, for a parent X, the previous token X[t-1]; then X[t]
is drawn from its parents at t. The emitted tokens are X[0..T-1].

Random bits are counter-based: node j of sequence b at step t uses one 32-bit word of
threefry-2x32 (the generator behind `jax.random`, written here in plain uint32 ops, which XLA
fuses and vectorises several times faster on CPU) keyed by `key` and counted by (b, t, j). They are
therefore a pure function of (key, sequence index, step, node), so a batch is bit-identical however
its rows are split across devices, and the first rows of a larger batch equal a smaller batch.

Sampling is the inverse CDF in integers: each conditional row becomes `states - 1` uint32
thresholds (the cumulative probabilities times 2**32), and a value is the number of thresholds
that are <= its random word. Probabilities are thereby resolved to 2**-32 (each state's
probability is off by at most 2**-32 plus the float32 rounding of the cumulative sums, computed
from the head below the row's most likely state and from the tail above it, so that small
probabilities keep their relative precision); a state of probability exactly 0 is never drawn.

`context` nodes get a fresh kernel for every sequence b, drawn with
`kernels.sample_node_kernel(fold_in(fold_in(key, CONTEXT_TAG), node_index), b)`. (The seed's code
redrew them per batch or per step; here they are fixed within a sequence, so a model must infer
them in context.)

Performance on CPU: the loop is many small ops per step, and XLA's default CPU thread pool was
slower on it than one thread on our 2-core machine; for throughput runs on CPU consider
`XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"`
(see `python -m benchmarks.sampler`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from gssm_jax.graph import GraphSpec
from gssm_jax.kernels import Kernels, product_conditional, sample_node_kernel

BITS_TAG = 0  # fold_in tags separating the random streams derived from the user's key
CONTEXT_TAG = 1
SATURATED = np.uint32(2**32 - 1)  # a threshold no (clamped) random word reaches: probability mass 0 above it
LARGEST_WORD = np.uint32(2**32 - 2)  # random words are clamped here so SATURATED is never <= a word
LARGEST_FLOAT_BELOW_2_32 = np.float32(2**32 - 256)
CHUNK_STEPS = 8  # time steps whose random words are drawn in one vectorised call (even)
THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
THREEFRY_PARITY = np.uint32(0x1BD11BDA)


def threefry_2x32(key_words: tuple[jax.Array, jax.Array], counter_high: jax.Array,
                  counter_low: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 (20 rounds, Random123), bit-identical to `jax.extend.random.threefry_2x32`.

    Args:
      key_words: two uint32 scalars.
      counter_high, counter_low: uint32 arrays of one broadcast shape, the two counter words.

    Returns:
      two uint32 arrays of the broadcast shape: the random words for each counter.
    """
    key_0, key_1 = key_words
    schedule = (key_0, key_1, key_0 ^ key_1 ^ THREEFRY_PARITY)
    x0 = counter_high + schedule[0]
    x1 = counter_low + schedule[1]
    for block in range(5):
        for rotation in THREEFRY_ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = (x1 << np.uint32(rotation)) | (x1 >> np.uint32(32 - rotation))
            x1 = x1 ^ x0
        x0 = x0 + schedule[(block + 1) % 3]
        x1 = x1 + schedule[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1


def cumulative_thresholds(probabilities: jax.Array) -> jax.Array:
    """Integer inverse-CDF thresholds of probability rows.

    Args:
      probabilities: float (..., states), each row summing to ~1 (it is renormalised).

    Returns:
      uint32 (..., states - 1), non-decreasing along the last axis: threshold k is the probability
      of states 0..k times 2**32, floored, and `SATURATED` when every state above k has probability
      0. A value drawn from a random word w in [0, 2**32 - 2] is `sum(thresholds <= w)`. Below the
      row's most likely state the thresholds come from the head sums, above it from the tail sums,
      so tiny probabilities at either end keep their float32 relative precision; thresholds are
      then held constant across states of probability exactly 0 (with a running max/min, exact
      whatever the summation order of `cumsum`), so those states are never drawn.
    """
    states = probabilities.shape[-1]
    columns = probabilities.reshape(-1, states).astype(jnp.float32).T  # (states, rows)
    scale = np.float32(2**32) / jnp.sum(columns, axis=0)

    # One sequential pass up (head sums) and one down (tail sums); a loop compiles to one small body.
    def both_ends(carry, probability):
        head, head_threshold, tail, tail_threshold = carry
        head_probability, tail_probability = probability
        head = head + head_probability
        threshold = jnp.minimum(jnp.floor(head * scale), LARGEST_FLOAT_BELOW_2_32).astype(jnp.uint32)
        head_threshold = jnp.where(head_probability > 0, jnp.maximum(head_threshold, threshold), head_threshold)
        tail = tail + tail_probability
        mass = jnp.minimum(jnp.ceil(tail * scale), LARGEST_FLOAT_BELOW_2_32).astype(jnp.uint32)
        threshold = jnp.where(mass == 0, SATURATED, np.uint32(0) - mass)
        tail_threshold = jnp.where(tail_probability > 0, jnp.minimum(tail_threshold, threshold), tail_threshold)
        return (head, head_threshold, tail, tail_threshold), (head_threshold, tail_threshold)

    zeros = jnp.zeros(columns.shape[1:], jnp.float32)
    initial = (zeros, jnp.zeros(zeros.shape, jnp.uint32), zeros, jnp.full(zeros.shape, SATURATED))
    _, (from_head, from_tail) = lax.scan(both_ends, initial, (columns[:-1], columns[:0:-1]))
    from_tail = from_tail[::-1]
    below_mode = jnp.arange(states - 1)[:, None] < jnp.argmax(columns, axis=0)
    # Rounding may put the mode's upper threshold below its lower one: clamp (the mode has p >= 1/states).
    floor_at_mode = jnp.max(jnp.where(below_mode, from_head, np.uint32(0)), axis=0)
    thresholds = jnp.where(below_mode, from_head, jnp.maximum(from_tail, floor_at_mode))
    return thresholds.T.reshape(*probabilities.shape[:-1], states - 1)


def token_dtype(vocab_size: int) -> jnp.dtype:
    """uint8 when the observed node has at most 256 states, else int32."""
    return jnp.dtype(jnp.uint8) if vocab_size <= 256 else jnp.dtype(jnp.int32)


def _levels(graph: GraphSpec) -> tuple[tuple[str, ...], ...]:
    """Hidden nodes grouped into same-step generations (each reads only earlier ones), then (X,)."""
    level: dict[str, int] = {}
    for name in graph.hidden_order:
        hidden_parents = [p for p in graph.node(name).parents if p != graph.observed]
        level[name] = 1 + max((level[p] for p in hidden_parents), default=-1)
    groups = [tuple(n for n in graph.hidden_order if level[n] == i) for i in range(max(level.values(), default=-1) + 1)]
    return (*groups, (graph.observed,))


def _strides(sizes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(math.prod(sizes[axis + 1:])) for axis in range(len(sizes)))


def _search_depth(states: int) -> int:
    """Binary-search steps that resolve `states` values (2**depth >= states)."""
    return max(1, (states - 1).bit_length())


def _all_thresholds(key: jax.Array, graph: GraphSpec, kernels: Kernels, rows: jax.Array) -> dict[str, jax.Array]:
    """Thresholds of every node: (input_rows, states - 1), or (batch, input_rows, states - 1) for context nodes.

    Nodes with equal state counts share one `cumulative_thresholds` call (fewer ops to compile).
    """
    def probabilities(name: str, kernel) -> jax.Array:
        table = kernel if graph.node(name).kernel == "fullrank" else product_conditional(kernel)
        return table.reshape(-1, graph.node(name).states)

    tables = {}
    for index, node in enumerate(graph.nodes):
        if node.mode != "context":
            tables[node.name] = probabilities(node.name, kernels[node.name])
            continue
        node_key = jax.random.fold_in(jax.random.fold_in(key, CONTEXT_TAG), index)
        per_sequence = jax.vmap(lambda row, name=node.name, node_key=node_key: probabilities(
            name, sample_node_kernel(jax.random.fold_in(node_key, row), graph, name)))(rows)
        tables[node.name] = per_sequence.reshape(-1, node.states)
    thresholds = {}
    for states in sorted({node.states for node in graph.nodes}):
        group = [node.name for node in graph.nodes if node.states == states]
        stacked = cumulative_thresholds(jnp.concatenate([tables[name] for name in group]))
        splits = np.cumsum([tables[name].shape[0] for name in group])[:-1]
        thresholds.update(zip(group, jnp.split(stacked, splits), strict=True))
    batch = rows.shape[0]
    return {name: (table.reshape(batch, -1, table.shape[-1]) if graph.node(name).mode == "context" else table)
            for name, table in thresholds.items()}


def sample_tokens_fn(key: jax.Array, graph: GraphSpec, kernels: Kernels, batch_size: int, length: int, *,
                     return_latents: bool = False, first_row: int | jax.Array = 0):
    """The pure sampler (not jitted): rows `first_row .. first_row + batch_size - 1` of the batch of `key`.

    Call it inside your own `jit` / `shard_map` (graph, batch_size, length static); `sample_tokens`
    is this function jitted, with the sharding handled.

    Args:
      key: a `jax.random.key` (or legacy uint32 key); the batch is a pure function of it.
      graph: the graph (static).
      kernels: `{name: kernel}` from `kernels.sample_kernels` (context nodes' entries are ignored).
      batch_size: number of sequences produced here.
      length: number of tokens T per sequence.
      return_latents: also return the hidden values.
      first_row: global index of the first sequence (selects the random counters).

    Returns:
      tokens `(batch_size, length)` (uint8 if X has <= 256 states, else int32), and with
      `return_latents` a dict `{hidden name: int32 (batch_size, length)}`.
    """
    names = (*graph.hidden_order, graph.observed)
    column = {name: j for j, name in enumerate(names)}  # which of the step's random words a node uses
    pairs_per_chunk = CHUNK_STEPS * len(names) // 2  # CHUNK_STEPS is even: whole threefry pairs per chunk
    num_chunks = -(-length // CHUNK_STEPS)
    bits_key = jax.random.bits(jax.random.fold_in(key, BITS_TAG), (2,), jnp.uint32)
    rows = jnp.asarray(first_row, jnp.uint32) + jnp.arange(batch_size, dtype=jnp.uint32)
    local_rows = jnp.arange(batch_size, dtype=jnp.int32)

    # Per level (nodes drawn together), one flat table of every node's thresholds padded to
    # 2**depth - 1 columns, so that each binary-search step is a single gather for the level.
    all_thresholds = _all_thresholds(key, graph, kernels, rows)
    levels = []
    for level in _levels(graph):
        depth = max(_search_depth(graph.node(name).states) for name in level)
        width = 2**depth - 1
        pieces, bases, position = [], {}, 0
        for name in level:
            thresholds = all_thresholds[name]
            pad = [(0, 0)] * (thresholds.ndim - 1) + [(0, width - thresholds.shape[-1])]
            pieces.append(jnp.pad(thresholds, pad, constant_values=SATURATED).reshape(-1))
            per_sequence = local_rows * np.int32(thresholds.shape[-2] * width) if thresholds.ndim == 3 else 0
            bases[name] = np.int32(position) + per_sequence
            position += pieces[-1].shape[0]
        # The barrier materialises the table once, before the loop: otherwise XLA may fuse the
        # padding and concatenation into the gathers and redo them over the whole table every step.
        levels.append((level, depth, width, lax.optimization_barrier(jnp.concatenate(pieces)), bases))

    def input_row(name: str, current: dict, previous: dict) -> jax.Array:
        values = [previous[p] if p in (name, graph.observed) else current[p] for p in graph.inputs(name)]
        return sum(value * np.int32(stride) for value, stride in zip(values, _strides(graph.input_sizes(name)),
                                                                       strict=True))

    def step(previous: dict, words: jax.Array):
        """One time step for the batch: words uint32 (batch, nodes) -> values int32 (batch,) per node."""
        current: dict[str, jax.Array] = {}
        for level, depth, width, table, bases in levels:
            start = jnp.stack([bases[n] + input_row(n, current, previous) * np.int32(width) for n in level], axis=1)
            level_words = words[:, [column[n] for n in level]]
            drawn = jnp.zeros_like(start)
            for half in (2**i for i in reversed(range(depth))):
                probe = table.at[start + drawn + np.int32(half - 1)].get(mode="promise_in_bounds")
                drawn = drawn + jnp.where(probe <= level_words, np.int32(half), np.int32(0))
            current.update({n: drawn[:, i] for i, n in enumerate(level)})
        emitted = {name: current[name] for name in names if return_latents or name == graph.observed}
        emitted[graph.observed] = emitted[graph.observed].astype(token_dtype(graph.vocab_size))
        return current, emitted

    def chunk(previous: dict, chunk_index: jax.Array):
        """CHUNK_STEPS steps; their random words are drawn in one vectorised threefry call."""
        counters = chunk_index * np.uint32(pairs_per_chunk) + jnp.arange(pairs_per_chunk, dtype=jnp.uint32)
        high, low = threefry_2x32((bits_key[0], bits_key[1]), rows[:, None], counters[None, :])
        words = jnp.stack([high, low], axis=-1).reshape(batch_size, CHUNK_STEPS, len(names))
        words = jnp.minimum(jnp.swapaxes(words, 0, 1), LARGEST_WORD)
        return lax.scan(step, previous, words)

    initial = {name: jnp.zeros((batch_size,), jnp.int32) for name in names}
    _, emitted = lax.scan(chunk, initial, jnp.arange(num_chunks, dtype=jnp.uint32))
    emitted = {name: values.reshape(num_chunks * CHUNK_STEPS, batch_size)[:length].T
               for name, values in emitted.items()}
    tokens = emitted.pop(graph.observed)
    return (tokens, emitted) if return_latents else tokens


def _batch_axes(sharding: NamedSharding) -> tuple[str, ...]:
    """Mesh axes that split the batch (the first entry of the sharding's spec)."""
    if not isinstance(sharding, NamedSharding):
        raise TypeError(f"sharding must be a jax.sharding.NamedSharding (e.g. P('data') on a mesh), got {sharding!r}")
    spec = tuple(sharding.spec)
    if any(entry is not None for entry in spec[1:]):
        raise ValueError(f"sharding.spec is {sharding.spec}; the sampler splits only the batch axis: use P('data')")
    first = spec[0] if spec else None
    return () if first is None else (first,) if isinstance(first, str) else tuple(first)


@functools.partial(jax.jit, static_argnames=("graph", "batch_size", "length", "return_latents", "sharding"))
def _sample_jitted(key, kernels, graph, batch_size, length, return_latents, sharding):
    axes = () if sharding is None else _batch_axes(sharding)
    if not axes:
        return sample_tokens_fn(key, graph, kernels, batch_size, length, return_latents=return_latents)
    shards = math.prod(sharding.mesh.shape[axis] for axis in axes)
    local = batch_size // shards

    def per_device(key, kernels):
        first_row = lax.axis_index(axes) * local
        return sample_tokens_fn(key, graph, kernels, local, length, return_latents=return_latents,
                                first_row=first_row)

    spec = PartitionSpec(axes[0] if len(axes) == 1 else axes)
    out_specs = (spec, {name: spec for name in graph.hidden_order}) if return_latents else spec
    return jax.shard_map(per_device, mesh=sharding.mesh, in_specs=(PartitionSpec(), PartitionSpec()),
                         out_specs=out_specs, check_vma=False)(key, kernels)


def sample_tokens(key: jax.Array, graph: GraphSpec, kernels: Kernels, batch_size: int, length: int, *,
                  return_latents: bool = False, sharding: NamedSharding | None = None):
    """Samples a batch of token sequences of the GSSM (jit-compiled; safe to call under an outer jit).

    Args:
      key: a `jax.random.key`; the batch is a pure function of `(key, kernels)`.
      graph: the graph (static: each new graph, batch_size or length compiles once).
      kernels: `{name: kernel}` from `kernels.sample_kernels`; context nodes are redrawn per sequence.
      batch_size: number of sequences (global, across devices).
      length: number of tokens T per sequence.
      return_latents: also return the hidden values.
      sharding: optional `NamedSharding(mesh, P("data"))`: each device samples its own rows on
        device; the result is bit-identical to `sharding=None`.

    Returns:
      tokens `(batch_size, length)`: uint8 if X has <= 256 states, else int32; with
      `return_latents`, `(tokens, {hidden name: int32 (batch_size, length)})`.
    """
    for field, value in (("batch_size", batch_size), ("length", length)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{field} must be a positive integer, got {value!r}")
    chunk_steps = -(-length // CHUNK_STEPS) * CHUNK_STEPS
    if batch_size > 2**32 or chunk_steps * len(graph.nodes) // 2 > 2**32:
        raise ValueError(f"batch_size={batch_size}, length={length} exceed the sampler's 32-bit random counters; "
                         "sample in several calls with different keys")
    if sharding is not None:
        shards = math.prod(sharding.mesh.shape[axis] for axis in _batch_axes(sharding))
        if batch_size % shards:
            raise ValueError(f"batch_size={batch_size} is not divisible by the {shards} devices of the sharding; "
                             f"use a multiple of {shards}")
    return _sample_jitted(key, kernels, graph, int(batch_size), int(length), bool(return_latents), sharding)

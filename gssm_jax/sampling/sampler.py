"""The JAX sampler: token batches of a GSSM, jit-compiled, batch-parallel, sharded on device.

Semantics are DESIGN.md §2: before the first step every previous value is 0; at step t each hidden
node is drawn (in `graph.hidden_order`, so same-step hidden parents are already drawn) from its own
previous value, its hidden parents at t and, for a parent X, the previous token X[t-1]; then X[t]
is drawn from its parents at t. The emitted tokens are X[0..T-1].

Random bits are counter-based: node j of sequence b at step t uses word j % 2 of threefry-2x32
(the generator behind `jax.random`, written here in plain uint32 ops, which XLA fuses and
vectorises several times faster on CPU) keyed by `key` at the counter (t * ceil(nodes / 2) + j // 2,
b). They are therefore a pure function of (key, sequence index, step, node), so a batch is
bit-identical however its rows are split across devices, and the first rows and steps of a larger
batch equal a smaller batch.

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

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from gssm_jax.model.graph import GraphSpec
from gssm_jax.model.kernels import Kernels, product_conditional, sample_node_kernel

BITS_TAG = 0  # fold_in tags separating the random streams derived from the user's key
CONTEXT_TAG = 1
SATURATED = np.uint32(2**32 - 1)  # a threshold no (clamped) random word reaches: probability mass 0 above it
LARGEST_WORD = np.uint32(2**32 - 2)  # random words are clamped here so SATURATED is never <= a word
LARGEST_FLOAT_BELOW_2_32 = np.float32(2**32 - 256)
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
      then held constant across states of probability exactly 0 (a running max from the head, a
      running min from the tail), so those states are never drawn.
    """
    states = probabilities.shape[-1]
    columns = probabilities.reshape(-1, states).astype(jnp.float32).T  # (states, rows)
    scale = np.float32(2**32) / jnp.sum(columns, axis=0)
    mode = jnp.argmax(columns, axis=0)
    zeros = jnp.zeros(columns.shape[1:], jnp.float32)

    # Two sequential passes (a loop compiles to one small body): up through the head sums, then
    # down through the tail sums, which also merges the two at the row's mode.
    def head_pass(carry, probability):
        head, head_threshold = carry
        head = head + probability
        threshold = jnp.minimum(jnp.floor(head * scale), LARGEST_FLOAT_BELOW_2_32).astype(jnp.uint32)
        head_threshold = jnp.where(probability > 0, jnp.maximum(head_threshold, threshold), head_threshold)
        return (head, head_threshold), head_threshold

    _, from_head = lax.scan(head_pass, (zeros, jnp.zeros(zeros.shape, jnp.uint32)), columns[:-1])
    # Rounding may put the mode's upper threshold below its lower one: clamp (the mode has p >= 1/states).
    floor_at_mode = jnp.where(mode > 0, jnp.take_along_axis(from_head, jnp.maximum(mode - 1, 0)[None], axis=0)[0],
                              np.uint32(0))

    def tail_pass(carry, inputs):
        tail, tail_threshold = carry
        probability, head_threshold, index = inputs
        tail = tail + probability
        mass = jnp.minimum(jnp.ceil(tail * scale), LARGEST_FLOAT_BELOW_2_32).astype(jnp.uint32)
        threshold = jnp.where(mass == 0, SATURATED, np.uint32(0) - mass)
        tail_threshold = jnp.where(probability > 0, jnp.minimum(tail_threshold, threshold), tail_threshold)
        merged = jnp.where(index < mode, head_threshold, jnp.maximum(tail_threshold, floor_at_mode))
        return (tail, tail_threshold), merged

    _, thresholds = lax.scan(tail_pass, (zeros, jnp.full(zeros.shape, SATURATED)),
                             (columns[1:], from_head, jnp.arange(states - 1)), reverse=True)
    return thresholds.T.reshape(*probabilities.shape[:-1], states - 1)


def token_dtype(vocab_size: int) -> jnp.dtype:
    """uint8 when the observed node has at most 256 states, else int32."""
    return jnp.dtype(jnp.uint8) if vocab_size <= 256 else jnp.dtype(jnp.int32)


ROW_GATHER_MAX_STATES = 128  # up to this many states a draw compares the whole threshold row; above, it bisects


def _strides(sizes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(math.prod(sizes[axis + 1:])) for axis in range(len(sizes)))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SamplingTables:
    """Inverse-CDF thresholds of a graph's fixed-kernel nodes, computed once per kernels.

    Pass it to `sample_tokens` in place of the kernels when sampling many batches from the same
    kernels: building the thresholds is the sampler's only per-call setup and costs ~0.1 s on the
    8x4/V64 graph (65,536 x 63 thresholds for X). Context nodes are not held: they are redrawn per
    sequence from the sampling key.

    Attributes:
      thresholds: `{name: uint32 (input_rows, states - 1)}` for every non-context node.
    """

    thresholds: dict[str, jax.Array]


def _probability_rows(graph: GraphSpec, name: str, kernel) -> jax.Array:
    table = kernel if graph.node(name).kernel == "fullrank" else product_conditional(kernel)
    return table.reshape(-1, graph.node(name).states)


def _grouped_thresholds(graph: GraphSpec, rows: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """`cumulative_thresholds` of each `{name: (n, states)}`; equal state counts share one call."""
    thresholds = {}
    for states in sorted({graph.node(name).states for name in rows}):
        group = [name for name in rows if graph.node(name).states == states]
        stacked = cumulative_thresholds(jnp.concatenate([rows[name] for name in group]))
        splits = np.cumsum([rows[name].shape[0] for name in group])[:-1]
        thresholds.update(zip(group, jnp.split(stacked, splits), strict=True))
    return thresholds


@functools.partial(jax.jit, static_argnames="graph")
def sampling_tables(graph: GraphSpec, kernels: Kernels) -> SamplingTables:
    """The thresholds of every non-context node of `graph` under `kernels` (see `SamplingTables`)."""
    return SamplingTables(_grouped_thresholds(graph, {
        node.name: _probability_rows(graph, node.name, kernels[node.name])
        for node in graph.nodes if node.mode != "context"}))


def node_thresholds(key: jax.Array, graph: GraphSpec, kernels: Kernels | SamplingTables,
                    rows: jax.Array) -> dict[str, jax.Array]:
    """Inverse-CDF thresholds of every node, one row per joint value of its inputs.

    Args:
      key: the sampling key (context nodes' per-sequence kernels derive from it).
      graph: the graph.
      kernels: from `kernels.sample_kernels`, or their `SamplingTables`.
      rows: uint32 (batch,) global sequence indices (they select context nodes' kernels).

    Returns:
      `{name: uint32 (input_rows, states - 1)}`; for a context node `(batch * input_rows, states - 1)`,
      sequence b's table first.
    """
    probabilities = {}
    for index, node in enumerate(graph.nodes):
        if node.mode != "context":
            if not isinstance(kernels, SamplingTables):
                probabilities[node.name] = _probability_rows(graph, node.name, kernels[node.name])
            continue
        node_key = jax.random.fold_in(jax.random.fold_in(key, CONTEXT_TAG), index)
        per_sequence = jax.vmap(lambda row, name=node.name, node_key=node_key: _probability_rows(
            graph, name, sample_node_kernel(jax.random.fold_in(node_key, row), graph, name)))(rows)
        probabilities[node.name] = per_sequence.reshape(-1, node.states)
    fixed = kernels.thresholds if isinstance(kernels, SamplingTables) else {}
    return {**fixed, **_grouped_thresholds(graph, probabilities)}


def draw_from_thresholds(thresholds: jax.Array, row: jax.Array, word: jax.Array) -> jax.Array:
    """Inverse-CDF draws: for each sequence, the number of thresholds of its row that are <= its word.

    Args:
      thresholds: uint32 (rows, states - 1) from `cumulative_thresholds`.
      row: int32 (batch,) row index of every sequence.
      word: uint32 (batch,) random words, at most `LARGEST_WORD`.

    Returns:
      int32 (batch,) drawn values in [0, states). Up to `ROW_GATHER_MAX_STATES` states the whole row
      is gathered at once (one contiguous read, compares vectorised); above, a binary search reads
      log2(states) entries.
    """
    width = thresholds.shape[-1]
    if width + 1 <= ROW_GATHER_MAX_STATES:
        selected = thresholds.at[row].get(mode="promise_in_bounds")  # (batch, width)
        return jnp.sum(selected <= word[:, None], axis=1, dtype=jnp.int32)
    flat = thresholds.reshape(-1)
    base = row * np.int32(width)
    drawn = jnp.zeros(row.shape, jnp.int32)
    for half in (2**i for i in reversed(range((width).bit_length()))):
        position = drawn + np.int32(half - 1)
        probe = flat.at[base + jnp.minimum(position, np.int32(width - 1))].get(mode="promise_in_bounds")
        probe = jnp.where(position < width, probe, SATURATED)
        drawn = drawn + jnp.where(probe <= word, np.int32(half), np.int32(0))
    return drawn


def _bits_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The two uint32 key words of the sampler's random words, derived from the user's key.

    For threefry keys (JAX's default) this is one threefry-2x32 block of the key at counter
    (0, BITS_TAG), in plain uint32 ops: `jax.random`'s own derivation compiles in ~0.3 s, a third of
    the sampler's compile time. Other key implementations go through `jax.random`.
    """
    words = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    if words.shape != (2,) or words.dtype != jnp.uint32:
        return tuple(jax.random.bits(jax.random.fold_in(key, BITS_TAG), (2,), jnp.uint32))
    return threefry_2x32((words[0], words[1]), jnp.uint32(0), jnp.uint32(BITS_TAG))


def sample_tokens_fn(key: jax.Array, graph: GraphSpec, kernels: Kernels | SamplingTables, batch_size: int,
                     length: int, *,
                     return_latents: bool = False, first_row: int | jax.Array = 0):
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

    Returns:
      tokens `(batch_size, length)` (uint8 if X has <= 256 states, else int32), and with
      `return_latents` a dict `{hidden name: int32 (batch_size, length)}`.
    """
    names = (*graph.hidden_order, graph.observed)
    pairs_per_step = -(-len(names) // 2)  # threefry yields two words per counter
    bits_key = _bits_key(key)
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

    initial = {name: jnp.zeros((batch_size,), jnp.int32) for name in names}
    _, emitted = lax.scan(step, (initial, step_words(jnp.uint32(0))), jnp.arange(length, dtype=jnp.uint32))
    emitted = {name: values.T for name, values in emitted.items()}
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


def sample_tokens(key: jax.Array, graph: GraphSpec, kernels: Kernels | SamplingTables, batch_size: int,
                  length: int, *,
                  return_latents: bool = False, sharding: NamedSharding | None = None):
    """Samples a batch of token sequences of the GSSM (jit-compiled; safe to call under an outer jit).

    Args:
      key: a `jax.random.key`; the batch is a pure function of `(key, kernels)`.
      graph: the graph (static: each new graph, batch_size or length compiles once).
      kernels: `{name: kernel}` from `kernels.sample_kernels` (context nodes are redrawn per
        sequence), or `sampling_tables(graph, kernels)` to skip rebuilding the inverse-CDF thresholds
        at every call (worth it on large tables when sampling many batches from the same kernels).
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
    if batch_size > 2**32 or length * -(-len(graph.nodes) // 2) > 2**32:
        raise ValueError(f"batch_size={batch_size}, length={length} exceed the sampler's 32-bit random counters; "
                         "sample in several calls with different keys")
    if sharding is not None:
        shards = math.prod(sharding.mesh.shape[axis] for axis in _batch_axes(sharding))
        if batch_size % shards:
            raise ValueError(f"batch_size={batch_size} is not divisible by the {shards} devices of the sharding; "
                             f"use a multiple of {shards}")
    return _sample_jitted(key, kernels, graph, int(batch_size), int(length), bool(return_latents), sharding)

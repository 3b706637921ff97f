"""Integer inverse-CDF tables: conditional probability rows as uint32 thresholds, and draws from them.

Each conditional row becomes `states - 1` uint32 thresholds (the cumulative probabilities times
2**32), and a value is the number of thresholds that are <= its random word. Probabilities are
thereby resolved to 2**-32 (each state's probability is off by at most 2**-32 plus the float32
rounding of the cumulative sums, computed from the head below the row's most likely state and from
the tail above it, so that small probabilities keep their relative precision); a state of
probability exactly 0 is never drawn.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gssm_jax import keys
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.gssm.kernels import Kernels, check_rows, conditional_table, sample_node_kernel

SATURATED = np.uint32(2**32 - 1)  # a threshold no (clamped) random word reaches: probability mass 0 above it
LARGEST_WORD = np.uint32(2**32 - 2)  # random words are clamped here so SATURATED is never <= a word
LARGEST_FLOAT_BELOW_2_32 = np.float32(2**32 - 256)
ROW_GATHER_MAX_STATES = 128  # up to this many states a draw compares the whole threshold row; above, it bisects


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
    """A node's conditional probabilities `(input_rows, states)` from its kernel (fullrank or product)."""
    return conditional_table(graph, {name: kernel}, name).reshape(-1, graph.node(name).states)


def _grouped_thresholds(graph: GraphSpec, rows: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """`cumulative_thresholds` of each `{name: (n, states)}`; equal state counts share one call."""
    thresholds = {}
    for states in sorted({graph.node(name).states for name in rows}):
        group = [name for name in rows if graph.node(name).states == states]
        stacked = cumulative_thresholds(jnp.concatenate([rows[name] for name in group]))
        splits = np.cumsum([rows[name].shape[0] for name in group])[:-1]
        thresholds.update(zip(group, jnp.split(stacked, splits), strict=True))
    return thresholds


def sampling_tables(graph: GraphSpec, kernels: Kernels) -> SamplingTables:
    """The thresholds of every non-context node of `graph` under `kernels` (see `SamplingTables`).

    Raises:
      ValueError: a node's conditional rows are not probabilities (`kernels.check_rows`).
    """
    check_rows(graph, kernels)
    return _sampling_tables(graph.structure, kernels)


@functools.partial(jax.jit, static_argnames="graph")
def _sampling_tables(graph: GraphSpec, kernels: Kernels) -> SamplingTables:
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
        node_key = keys.context_node_key(key, index)
        per_sequence = jax.vmap(lambda row, name=node.name, node_key=node_key: _probability_rows(
            graph, name, sample_node_kernel(keys.context_sequence_key(node_key, row), graph, name)))(rows)
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


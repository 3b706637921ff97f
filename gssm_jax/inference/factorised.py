"""The factorised forward pass for any graph: one hidden node at a time.

This is the general path of `gssm_jax.inference`: it handles same-step hidden -> hidden edges (a
DAG), per-sequence tables (the Monte Carlo draws of `context` nodes) and any state counts. Graphs
of independent hidden chains take the faster paths of `gssm_jax.inference.chains`.

One step t on a chunk of sequences:

1. **transition, one hidden node at a time** in `graph.hidden_order`: the belief is a tensor with
   one axis per hidden node; node h's axis is contracted with its conditional table, whose other
   inputs are either the known token X[t-1] (a row is selected per sequence) or same-step hidden
   parents (already updated to step t, so they are shared axes of the contraction);
2. **emission**: the belief is multiplied by `p(x_t | X's parents)`, broadcast over X's parent axes;
3. **normalisation**: the total mass is `p(x_t | x_<t)`; dividing by it keeps the belief a
   distribution, so float32 is enough even with exact zeros in the tables and alpha down to 1e-4.

Step 0 starts from the zero state (its transition reads all-zero previous values and X[-1] = 0), or,
for sequences emitted after an unobserved burn-in (`gssm_jax.gssm.initial_state`), from `burn_in_prior`:
the exact distribution of the hidden values after the burn-in, which replaces step 0's transition.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from gssm_jax.gssm.graph import GraphSpec


def arrange(values: jax.Array, value_axes: tuple[str, ...], layout: tuple[str, ...]) -> jax.Array:
    """Places `values (lead, *value_axes)` on a belief layout `(lead, *layout)`, size 1 elsewhere."""
    order = sorted(range(len(value_axes)), key=lambda i: layout.index(value_axes[i]))
    values = jnp.transpose(values, (0, *(1 + i for i in order)))
    shape = [values.shape[0]] + [1] * len(layout)
    for position, i in enumerate(order):
        shape[1 + layout.index(value_axes[i])] = values.shape[1 + position]
    return values.reshape(shape)


def previous_tokens(tokens: jax.Array) -> jax.Array:
    """X[t-1] for every position of `tokens (chunk, length)`: the tokens shifted right, X[-1] = 0."""
    return jnp.concatenate([jnp.zeros((tokens.shape[0], 1), tokens.dtype), tokens[:, :-1]], axis=1)


def pairwise_sum(values: jax.Array) -> jax.Array:
    """Sum over the last axis by a balanced tree: rounding error O(eps log n), not O(eps n)."""
    while values.shape[-1] > 1:
        if values.shape[-1] % 2:
            values = jnp.concatenate([values, jnp.zeros((*values.shape[:-1], 1), values.dtype)], axis=-1)
        values = values[..., 0::2] + values[..., 1::2]
    return values[..., 0]


def _select_input(table: jax.Array, axis: int, values: jax.Array, per_sequence: bool) -> jax.Array:
    """Rows of `table` with input `axis` fixed to `values (chunk,)`: `(chunk, *other axes)`.

    `table` is `(*axes)` shared by all sequences, or `(chunk, *axes)` when `per_sequence`.
    """
    if per_sequence:
        table = jnp.moveaxis(table, 1 + axis, 1)
        return table[jnp.arange(table.shape[0]), values]
    return jnp.moveaxis(table, axis, 0)[values]


def _transition(belief: jax.Array, layout: tuple[str, ...], graph: GraphSpec, name: str, table: jax.Array,
                previous_token: jax.Array, per_sequence: bool, contraction: str) -> jax.Array:
    """Advances hidden node `name`, the last axis of `belief (chunk, *rest, name)`, from t-1 to t.

    `layout` names the belief's axes after the chunk axis. Returns the belief on the layout
    `(chunk, name, *rest)`: the contracted axis is always the last one (the fastest contraction we
    measured), and since the belief starts each step on the reversed `hidden_order`, it is back on
    that layout once every hidden node has been advanced.
    """
    inputs = graph.inputs(name)
    if graph.observed in inputs:
        axis = inputs.index(graph.observed)
        table = _select_input(table, axis, previous_token, per_sequence)
        inputs = inputs[:axis] + inputs[axis + 1:]
    elif not per_sequence:
        table = table[None]
    # table: (chunk or 1, own previous, *same-step hidden parents, own next)
    parents = inputs[1:]
    rest = layout[:-1]
    if contraction == "einsum":
        table = jnp.broadcast_to(table, (belief.shape[0], *table.shape[1:]))
        letters = {axis_name: index + 1 for index, axis_name in enumerate(layout)}
        next_letter = len(layout) + 1
        return jnp.einsum(belief, [0, *letters.values()],
                          table, [0, letters[name], *(letters[p] for p in parents), next_letter],
                          [0, next_letter, *(letters[a] for a in rest)])
    out_layout = (name, *rest)
    new_belief = None
    for value in range(graph.node(name).states):
        rows = arrange(table[:, value], (*parents, name), out_layout)
        term = belief[:, None, ..., value] * rows
        new_belief = term if new_belief is None else new_belief + term
    return new_belief


def _emission(graph: GraphSpec, table: jax.Array, token: jax.Array, per_sequence: bool) -> jax.Array:
    """`p(x_t | X's parents)` for each sequence, on the belief layout; NaN for tokens outside [0, V)."""
    if per_sequence:
        table = jnp.moveaxis(table, -1, 1)
        rows = jnp.take_along_axis(table, token.reshape((-1,) + (1,) * (table.ndim - 1)), axis=1,
                                   mode="fill", fill_value=jnp.nan)[:, 0]
    else:
        rows = jnp.take(jnp.moveaxis(table, -1, 0), token, axis=0, mode="fill", fill_value=jnp.nan)
    return arrange(rows, graph.inputs(graph.observed), graph.hidden_order[::-1])


def _contraction(graph: GraphSpec) -> str:
    # Measured on a 2-core CPU: explicit multiply-adds win while the belief is small (the step is
    # dominated by per-op overhead), a batched matrix product once it is large.
    return "multiply_add" if graph.num_latent_states <= 4096 else "einsum"


def _unroll(graph: GraphSpec) -> int:
    # Small graphs are dominated by the per-step loop overhead; unrolling amortises it.
    return 4 if graph.num_latent_states <= 4096 else 1


def hidden_layout(belief: jax.Array, graph: GraphSpec) -> jax.Array:
    """A belief `(..., S)` over the hidden values, C-order over `hidden_order`, on the layout
    `(..., *reversed(hidden_order))` of `forward_chunk`."""
    sizes = tuple(graph.node(name).states for name in graph.hidden_order)
    lead = belief.ndim - 1
    belief = belief.reshape(*belief.shape[:-1], *sizes)
    return jnp.transpose(belief, (*range(lead), *reversed(range(lead, lead + len(sizes)))))


def forward_chunk(graph: GraphSpec, tables: dict[str, jax.Array], tokens: jax.Array,
                  per_sequence: frozenset[str], prior: jax.Array | None = None) -> jax.Array:
    """Token losses `(chunk, length)` in nats per token of one chunk of sequences `tokens (chunk, length)`.

    `tables[name]` is the conditional table of node `name` (`(*inputs, states)`), with a leading
    chunk axis for the names in `per_sequence`. `prior`: None starts from the zero state (the first
    step's transition from all-zero values and X[-1] = 0); else `(S,)`, the distribution of the hidden
    values at step 0, C-order over `hidden_order` (`burn_in_prior`), which replaces that transition.
    """
    chunk = tokens.shape[0]
    dtype = jnp.result_type(*tables.values())
    contraction = _contraction(graph)
    sizes = tuple(graph.node(name).states for name in graph.hidden_order[::-1])

    def transition(belief, previous_token):
        layout = graph.hidden_order[::-1]
        for name in graph.hidden_order:
            belief = _transition(belief, layout, graph, name, tables[name], previous_token, name in per_sequence,
                                 contraction)
            layout = (name, *layout[:-1])
        return belief

    def observe(belief, token):
        belief = belief * _emission(graph, tables[graph.observed], token, graph.observed in per_sequence)
        # A balanced tree keeps the float32 rounding of the sum over S states at O(eps log S).
        mass = pairwise_sum(belief.reshape(chunk, -1)).reshape((chunk,) + (1,) * len(sizes))
        # An impossible token leaves zero mass: keep the zero belief (every later loss is +inf) rather
        # than 0/0 = NaN.
        belief = jnp.where(mass > 0, belief / mass, belief)
        return belief, -jnp.log(mass.reshape(chunk))

    def step(belief, token_pair):
        previous_token, token = token_pair
        return observe(transition(belief, previous_token), token)

    if prior is None:
        belief = jnp.zeros((chunk, math.prod(sizes)), dtype).at[:, 0].set(1).reshape((chunk, *sizes))
        _, losses = lax.scan(step, belief, (previous_tokens(tokens).T, tokens.T), unroll=_unroll(graph))
        return losses.T
    belief, first = observe(jnp.broadcast_to(hidden_layout(prior.astype(dtype), graph), (chunk, *sizes)),
                            tokens[:, 0])
    _, losses = lax.scan(step, belief, (tokens[:, :-1].T, tokens[:, 1:].T), unroll=_unroll(graph))
    return jnp.concatenate([first[:, None], losses.T], axis=1)


def burn_in_prior(graph: GraphSpec, tables: dict[str, jax.Array], steps: int) -> jax.Array:
    """The distribution of the hidden values at the first emitted step after `steps` unobserved steps.

    The chain starts from the zero state (all previous values 0, X[-1] = 0) and runs `steps` steps
    whose tokens are not observed; the result is the distribution of the hidden values of step
    `steps`, before its token: `(S,)`, C-order over `hidden_order`, in the tables' float dtype.
    Computed exactly by propagating the joint distribution of (X[t-1], hidden values at t-1),
    `(V, S)`, one hidden node at a time (the transition of `forward_chunk`, with the V token values
    as its chunk), then summing over X[t-1] and multiplying by the emission: O(steps x V x S x sum
    of states) flops. With `steps = 0` it is the first step's transition from the zero state.
    """
    tokens = jnp.arange(graph.vocab_size)
    layout = graph.hidden_order[::-1]
    sizes = tuple(graph.node(name).states for name in layout)
    dtype = jnp.result_type(*tables.values())
    contraction = _contraction(graph)
    emission = _emission(graph, tables[graph.observed], tokens, False)  # (V, layout), p(X[t] = x | hidden)

    def predict(joint):  # p(X[t-1], hidden[t-1]) (V, *layout) -> p(hidden[t]) (*layout)
        current = layout
        for name in graph.hidden_order:
            joint = _transition(joint, current, graph, name, tables[name], tokens, False, contraction)
            current = (name, *current[:-1])
        return jnp.sum(joint, axis=0)

    def step(_, joint):
        joint = predict(joint)[None] * emission
        return joint / jnp.sum(joint)  # a distribution: only float rounding to remove

    start = jnp.zeros((graph.vocab_size, math.prod(sizes)), dtype).at[0, 0].set(1).reshape((-1, *sizes))
    prior = predict(lax.fori_loop(0, steps, step, start))
    return jnp.transpose(prior, tuple(reversed(range(len(sizes))))).reshape(-1)

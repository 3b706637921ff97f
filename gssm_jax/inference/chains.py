"""Fast forward passes for graphs of independent hidden chains (the Experiment 1 graphs).

A graph has independent chains when every hidden node reads only its own previous value and the
previous token X[t-1] (`independent_chains`). For a known X[t-1] the transition is then a Kronecker
product of per-node `(previous, next)` matrices, with no shared axes between nodes, which allows two
layouts faster than the general pass of `gssm_jax.inference.factorised`:

* `forward_minor`, for small state spaces: sequences on the minor axis of the belief, one hidden
  node advanced per iteration of an inner loop. On a CPU a step of the 4x4 graph is a handful of
  vectorised loops over `(S, chunk)`; the per-op overhead, not arithmetic, sets its cost. The inner
  loop is what keeps XLA from fusing consecutive nodes into one loop that recomputes each node's
  output (4 nodes fused in one step body took 3.5-5x as long as 4 separate loops;
  `lax.optimization_barrier` does not prevent it on CPU).
* `forward_blocks`, for large state spaces: nodes grouped into blocks of <= `BLOCK_STATES` joint
  values, one belief axis per block, each axis advanced in place by a product with the block's
  Kronecker matrix for X[t-1], one sequence at a time (the CPU pass).
* `forward_blocks_batched`, the accelerator pass for any independent chains: the same blocks, every
  sequence of a chunk advanced together by one batched product per block and time step.

All return the token losses `-log p(x_t | x_<t)` in nats per token, as the general pass, from the zero
state or from a `prior` over the hidden values of step 0 (`factorised.burn_in_prior`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.inference.factorised import arrange, previous_tokens

# Independent hidden chains are advanced in blocks of nodes with at most this many joint values.
BLOCK_STATES = 16


def independent_chains(graph: GraphSpec) -> bool:
    """Whether every hidden node reads only its own previous value and X[t-1] (no same-step parents)."""
    return all(set(graph.inputs(name)) <= {name, graph.observed} for name in graph.hidden_order)


def padded_states(graph: GraphSpec) -> int:
    """Joint values of the hidden nodes once each is padded to the largest state count (`forward_minor`)."""
    return max(node.states for node in graph.hidden_nodes) ** len(graph.hidden_order)


def _node_matrices(graph: GraphSpec, tables: dict[str, jax.Array], name: str) -> jax.Array:
    """`(V, s, s)`: `p(name[t] = j | name[t-1] = i, X[t-1] = x)` for every token x."""
    table, inputs = tables[name], graph.inputs(name)
    if graph.observed in inputs:
        return jnp.moveaxis(table, inputs.index(graph.observed), 0)
    return jnp.broadcast_to(table, (graph.vocab_size, *table.shape))


# ---- sequences on the minor axis, one node per inner iteration ------------------------------------------


def forward_minor(graph: GraphSpec, tables: dict[str, jax.Array], tokens: jax.Array,
                  prior: jax.Array | None = None) -> jax.Array:
    """Token losses `(chunk, length)` in nats per token of `tokens (chunk, length)` (`independent_chains`).

    Every hidden node is padded to m = the largest state count (padded values have zero probability
    and stay at zero belief), so that all nodes are advanced by the same loop body. The belief is
    `(m,) * n + (chunk,)`; the inner loop advances the node on the first axis with its `(m, m, chunk)`
    matrices selected by X[t-1] and appends the new value as the last node axis, so after n
    iterations the layout is `hidden_order` again. Cost: O(m^n x n x m) multiply-adds per token.
    `prior`: as `factorised.forward_chunk`'s (None: the zero state).
    """
    chunk = tokens.shape[0]
    names = graph.hidden_order
    count = len(names)
    width = max(graph.node(name).states for name in names)
    states = width**count
    dtype = jnp.result_type(*tables.values())

    def pad(array, axes):
        return jnp.pad(array, [(0, width - size) if axis in axes else (0, 0) for axis, size in enumerate(array.shape)])

    # (n, m, m, V): node k's matrices for every X[t-1], moved so that a token selects the minor axis.
    transitions = jnp.stack([jnp.moveaxis(pad(_node_matrices(graph, tables, name), (1, 2)), 0, -1) for name in names])
    emission = arrange(jnp.moveaxis(tables[graph.observed], -1, 0), graph.inputs(graph.observed), names)
    emission = pad(emission, tuple(1 + k for k in range(count) if emission.shape[1 + k] > 1))
    emission = jnp.broadcast_to(emission, (graph.vocab_size, *(width,) * count)).reshape(graph.vocab_size, states).T

    def advance_node(_, carry):
        belief, matrices = carry  # (m, *other nodes, chunk), (n, m, m, chunk) with this node first
        new_belief = None
        for value in range(width):
            term = belief[value][..., None, :] * matrices[0, value]
            new_belief = term if new_belief is None else new_belief + term
        return new_belief, jnp.roll(matrices, -1, axis=0)

    def observe(belief, token):
        belief = belief.reshape(states, chunk) * jnp.take(emission, token, axis=1, mode="fill", fill_value=jnp.nan)
        mass = jnp.sum(belief, axis=0)
        # An impossible token leaves zero mass: keep the zero belief (every later loss is +inf), not 0/0.
        belief = jnp.where(mass > 0, belief / mass, belief)
        return belief.reshape(*(width,) * count, chunk), -jnp.log(mass)

    def step(belief, token_pair):
        previous_token, token = token_pair
        matrices = jnp.take(transitions, previous_token, axis=-1)
        belief, _ = lax.fori_loop(0, count, advance_node, (belief, matrices))
        return observe(belief, token)

    if prior is None:
        belief = jnp.zeros((states, chunk), dtype).at[0].set(1).reshape(*(width,) * count, chunk)
        _, losses = lax.scan(step, belief, (previous_tokens(tokens).T, tokens.T))
        return losses.T
    sizes = tuple(graph.node(name).states for name in names)
    start = jnp.pad(prior.astype(dtype).reshape(sizes), [(0, width - size) for size in sizes])
    belief, first = observe(jnp.broadcast_to(start[..., None], (*(width,) * count, chunk)), tokens[:, 0])
    _, losses = lax.scan(step, belief, (tokens[:, :-1].T, tokens[:, 1:].T))
    return jnp.concatenate([first[None], losses]).T


# ---- Kronecker blocks, batched matrix products ------------------------------------------------------------


def blocks(graph: GraphSpec) -> tuple[tuple[str, ...], ...]:
    """Consecutive hidden nodes grouped while their joint state count stays <= `BLOCK_STATES`."""
    groups, current, size = [], [], 1
    for name in graph.hidden_order:
        states = graph.node(name).states
        if current and size * states > BLOCK_STATES:
            groups.append(tuple(current))
            current, size = [], 1
        current.append(name)
        size *= states
    return (*groups, tuple(current))


def _block_transition(graph: GraphSpec, tables: dict[str, jax.Array], block: tuple[str, ...]) -> jax.Array:
    """`(V, s, s)`: `p(block[t] = j | block[t-1] = i, X[t-1] = x)`, the Kronecker product of the nodes'
    `(own previous, next)` matrices; joint values C-order over `block`, s their count."""
    matrix = jnp.ones((graph.vocab_size, 1, 1), jnp.result_type(*tables.values()))
    for name in block:
        node_matrix = _node_matrices(graph, tables, name)
        rows, states = matrix.shape[1], node_matrix.shape[1]
        matrix = (matrix[:, :, None, :, None] * node_matrix[:, None, :, None, :]).reshape(
            graph.vocab_size, rows * states, rows * states)
    return matrix


def _block_operators(graph: GraphSpec, tables: dict[str, jax.Array]):
    """Per-block transitions `[(V, s, s)]`, the block sizes, and the emission `(V, *block_sizes)`."""
    groups = blocks(graph)
    transitions = [_block_transition(graph, tables, block) for block in groups]
    layout = tuple(name for block in groups for name in block)
    block_sizes = tuple(transition.shape[1] for transition in transitions)
    emission_rows = arrange(jnp.moveaxis(tables[graph.observed], -1, 0), graph.inputs(graph.observed), layout)
    emission = jnp.broadcast_to(emission_rows, (graph.vocab_size, *(graph.node(n).states for n in layout)))
    return transitions, block_sizes, emission.reshape(graph.vocab_size, *block_sizes)


def _block_contractions(count: int, lead: str = "") -> list[str]:
    """Einsum specs contracting block k's axis in place with a `(lead, previous, next)` matrix."""
    letters = "abcdefghijklmnopqrstuvwxy"[:count]
    return [f"{lead}{letters},{lead}{letter}z->{lead}{letters.replace(letter, 'z')}" for letter in letters]


def forward_blocks(graph: GraphSpec, tables: dict[str, jax.Array], tokens: jax.Array,
                   prior: jax.Array | None = None) -> jax.Array:
    """Token losses `(chunk, length)` in nats per token of `tokens (chunk, length)` (`independent_chains`).

    The CPU pass. The transition of a block of nodes for a known X[t-1] is a Kronecker product,
    precomputed for every token value (`_block_transition`). Sequences are advanced one at a time
    (`lax.map`), so that each block's contraction is a plain matrix product with the block's `(s, s)`
    matrix on a belief that stays in cache (batched products of per-sequence matrices ran at a third
    of the speed on a CPU). The belief has one axis per block, C-order over the blocks, and each
    block's axis is contracted in place (an einsum that keeps the axis order): on 8x4/V64 that was
    ~20% faster than contracting the last axis and rotating it to the front with a transpose. The
    normalisation by the previous step's mass is folded into the emission multiply, which saves a
    pass over the belief. `prior`: as `factorised.forward_chunk`'s (None: the zero state).
    """
    dtype = jnp.result_type(*tables.values())
    transitions, block_sizes, emission = _block_operators(graph, tables)
    contractions = _block_contractions(len(block_sizes))

    def observe(belief, mass, token):
        # An impossible token leaves zero mass: keep the zero belief (every later loss is +inf), not 0/0.
        scale = jnp.where(mass > 0, 1 / mass, 1)
        belief = belief * (jnp.take(emission, token, axis=0, mode="fill", fill_value=jnp.nan) * scale)
        mass = jnp.sum(belief)
        return (belief, mass), -jnp.log(mass)

    def step(carry, token_pair):
        belief, mass = carry  # belief: (*block_sizes,) with total `mass`, p(x_{t-1} | x_<t-1)
        previous_token, token = token_pair
        for contraction, transition in zip(contractions, transitions, strict=True):
            belief = jnp.einsum(contraction, belief, transition[previous_token])  # (previous, next)
        return observe(belief, mass, token)

    def one_sequence(sequence_tokens):
        if prior is None:
            start = jnp.zeros(block_sizes, dtype).at[(0,) * len(block_sizes)].set(1)
            _, losses = lax.scan(step, (start, jnp.ones((), dtype)),
                                 (previous_tokens(sequence_tokens[None])[0], sequence_tokens))
            return losses
        carry, first = observe(prior.astype(dtype).reshape(block_sizes), jnp.ones((), dtype), sequence_tokens[0])
        _, losses = lax.scan(step, carry, (sequence_tokens[:-1], sequence_tokens[1:]))
        return jnp.concatenate([first[None], losses])

    return lax.map(one_sequence, tokens)


def forward_blocks_batched(graph: GraphSpec, tables: dict[str, jax.Array], tokens: jax.Array,
                           prior: jax.Array | None = None) -> jax.Array:
    """Token losses `(chunk, length)` in nats per token of `tokens (chunk, length)` (`independent_chains`).

    The accelerator pass: the same Kronecker blocks as `forward_blocks`, but every sequence of the
    chunk advances together, so a time step is one batched `(chunk, ..., s) x (chunk, s, s)` product
    per block, the emission multiply and a sum, with no per-sequence loop. `prior`: as
    `factorised.forward_chunk`'s (None: the zero state).
    """
    chunk = tokens.shape[0]
    dtype = jnp.result_type(*tables.values())
    transitions, block_sizes, emission = _block_operators(graph, tables)
    contractions = _block_contractions(len(block_sizes), lead="Y")
    ones = (1,) * len(block_sizes)

    def observe(belief, mass, token):
        # An impossible token leaves zero mass: keep the zero belief (every later loss is +inf), not 0/0.
        scale = jnp.where(mass > 0, 1 / mass, 1).reshape(chunk, *ones)
        belief = belief * (jnp.take(emission, token, axis=0, mode="fill", fill_value=jnp.nan) * scale)
        mass = jnp.sum(belief.reshape(chunk, -1), axis=1)
        return (belief, mass), -jnp.log(mass)

    def step(carry, token_pair):
        belief, mass = carry  # belief: (chunk, *block_sizes) with total `mass (chunk,)`
        previous_token, token = token_pair
        for contraction, transition in zip(contractions, transitions, strict=True):
            belief = jnp.einsum(contraction, belief, transition[previous_token])  # (chunk, previous, next)
        return observe(belief, mass, token)

    if prior is None:
        start = jnp.zeros((chunk, *block_sizes), dtype).at[(slice(None), *(0,) * len(block_sizes))].set(1)
        _, losses = lax.scan(step, (start, jnp.ones((chunk,), dtype)), (previous_tokens(tokens).T, tokens.T))
        return losses.T
    start = jnp.broadcast_to(prior.astype(dtype).reshape(block_sizes), (chunk, *block_sizes))
    carry, first = observe(start, jnp.ones((chunk,), dtype), tokens[:, 0])
    _, losses = lax.scan(step, carry, (tokens[:, :-1].T, tokens[:, 1:].T))
    return jnp.concatenate([first[None], losses]).T

"""A plain numpy GSSM sampler with composable-llm's draw order: the test oracle and benchmark baseline.

It follows `gssm_jax.gssm.graph`'s semantics and reproduces the original numpy code bit for bit on fullrank graphs:

1. `rng = default_rng(SeedSequence(seed).spawn(1)[0])`;
2. kernels: hidden nodes in config order, then X, each `rng.dirichlet(full(states, alpha),
   size=prod(input_sizes))` reshaped to `(*input_sizes, states)` (C-order rows); no clipping;
3. data: a *new* generator in the same initial state as step 1 (the original replays the bit
   stream that drew the kernels); previous values all 0; for every step, for every hidden node in
   sampling order then X: `u = rng.random(batch)`, `value = argmax(u < cumsum(row))`.

Python loops over time and nodes, vectorised over the batch: the speed of the original code.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from gssm_jax.gssm.graph import GraphSpec

PRODUCT_CLIP = 1e-10


def seed_generator(seed: int) -> np.random.Generator:
    """The generator the original code built from an integer seed."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


def _swap_largest_into(rows: np.ndarray, target: np.ndarray) -> np.ndarray:
    rows = rows.copy()
    flat = rows.reshape(-1, rows.shape[-1])
    target = np.broadcast_to(target, rows.shape[:-1]).reshape(-1)
    largest = flat.argmax(axis=1)
    index = np.arange(flat.shape[0])
    largest_value = flat[index, largest].copy()
    flat[index, largest] = flat[index, target]
    flat[index, target] = largest_value
    return flat.reshape(rows.shape)


def _apply_mode(table: np.ndarray, mode: str, own_previous_axis: bool) -> np.ndarray:
    if mode == "dead":
        return _swap_largest_into(table, np.zeros((), int))
    if mode == "slow" and own_previous_axis:
        own = np.arange(table.shape[0]).reshape((table.shape[0],) + (1,) * (table.ndim - 2))
        return _swap_largest_into(table, own)
    return table


def draw_node_kernel(rng: np.random.Generator, graph: GraphSpec, name: str) -> np.ndarray:
    """One node's full conditional table `(*input_sizes, states)`, float64, mode applied."""
    node = graph.node(name)
    sizes = graph.input_sizes(name)
    concentration = np.full(node.states, node.alpha)
    if node.kernel == "fullrank":
        table = rng.dirichlet(concentration, size=int(np.prod(sizes))).reshape(*sizes, node.states)
        return _apply_mode(table, node.mode, own_previous_axis=not node.observed)
    tables = [_apply_mode(rng.dirichlet(concentration, size=size), node.mode,
                          own_previous_axis=axis == 0 and not node.observed) for axis, size in enumerate(sizes)]
    return product_conditional(tables)


def product_conditional(tables: list[np.ndarray]) -> np.ndarray:
    """Full conditional `(*input_sizes, states)` of a product kernel from its per-input tables `(input_size, states)`.

    Rows clipped at `PRODUCT_CLIP` in probability, then multiplied in log space (sum of logs, normalised
    by the log-sum-exp), so that no product of many small clipped entries underflows.
    """
    states = tables[0].shape[-1]
    log_product = np.zeros((1,) * len(tables) + (states,))
    for axis, table in enumerate(tables):
        shape = [1] * len(tables) + [states]
        shape[axis] = table.shape[0]
        log_product = log_product + np.log(np.clip(table, PRODUCT_CLIP, None)).reshape(shape)
    return np.exp(log_product - logsumexp(log_product, axis=-1, keepdims=True))


def draw_tables(rng: np.random.Generator, graph: GraphSpec) -> dict[str, np.ndarray]:
    """Conditional tables of every node, hidden nodes in config order first, then X (seed order)."""
    hidden = [node.name for node in graph.nodes if not node.observed]
    return {name: draw_node_kernel(rng, graph, name) for name in [*hidden, graph.observed]}


def sample(rng: np.random.Generator, graph: GraphSpec, tables: dict[str, np.ndarray], batch_size: int,
           length: int, *, return_latents: bool = False):
    """Samples sequences with composable-llm's draw order.

    Args:
      rng: numpy generator, consumed in composable-llm's order (one `random(batch_size)` per node per step).
      graph: the graph.
      tables: `{name: (*input_sizes, states)}` conditional tables (e.g. from `draw_tables`, or
        numpy copies of `gssm_jax.gssm.kernels.conditional_tables`). Context nodes are redrawn per
        sequence from `rng` before the first step.
      batch_size: number of sequences.
      length: number of emitted tokens T.
      return_latents: also return the hidden values.

    Returns:
      tokens: int64 `(batch_size, length)`, and if `return_latents` a dict
      `{name: int64 (batch_size, length)}` of hidden values.
    """
    tables = {name: np.asarray(table, np.float64) for name, table in tables.items()}
    cumulative = {name: np.cumsum(table, axis=-1) for name, table in tables.items()}
    context = [node.name for node in graph.nodes if node.mode == "context"]
    per_sequence = {name: np.stack([np.cumsum(draw_node_kernel(rng, graph, name), axis=-1)
                                    for _ in range(batch_size)]) for name in context}
    previous = {node.name: np.zeros(batch_size, np.int64) for node in graph.nodes}
    tokens = np.zeros((batch_size, length), np.int64)
    latents = {name: np.zeros((batch_size, length), np.int64) for name in graph.hidden_order}
    rows = np.arange(batch_size)
    order = [*graph.hidden_order, graph.observed]
    for t in range(length):
        current: dict[str, np.ndarray] = {}
        for name in order:
            index = tuple(current[p] if p in current and p != name else previous[p] for p in graph.inputs(name))
            if name in per_sequence:
                row = per_sequence[name][(rows, *index)]
            else:
                row = cumulative[name][index]
            u = rng.random(batch_size)
            current[name] = np.argmax(u[:, None] < row, axis=1)
        for name in graph.hidden_order:
            latents[name][:, t] = current[name]
        tokens[:, t] = current[graph.observed]
        previous = current
    return (tokens, latents) if return_latents else tokens


def seed_batch(graph: GraphSpec, seed: int, batch_size: int, length: int) -> np.ndarray:
    """The first batch the original code produced for `seed`: kernels and data from the same stream.

    Returns:
      tokens: int64 `(batch_size, length)`.
    """
    tables = draw_tables(seed_generator(seed), graph)
    return sample(seed_generator(seed), graph, tables, batch_size, length)

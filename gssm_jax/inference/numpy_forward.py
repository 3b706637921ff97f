"""Plain numpy forward passes in float64: the oracles the exact JAX pass is tested and benchmarked against.

`factorised_losses` keeps the belief as a `(batch, *hidden_order)` array and updates one hidden node at a
time (the factorisation, written with `np.einsum`); `dense_losses` multiplies the belief by the
whole `(S, S)` product transition (`dense_transitions`), so it needs no factorisation at all and is for
small graphs only. Both return `-log p(x_t | x_<t)` per token in nats, Python loops over time.
`dense_burn_in_prior` is the dense oracle of the "stationary" initial state's step-0 distribution, which
`dense_losses(..., prior=...)` starts from.
"""

from __future__ import annotations

import itertools

import numpy as np

from gssm_jax.gssm.graph import GraphSpec


def _selected_rows(graph: GraphSpec, table: np.ndarray, name: str, previous_token: np.ndarray) -> np.ndarray:
    """Table of hidden node `name` with its X input fixed per sequence: `(batch, own, *hidden parents, next)`."""
    inputs = graph.inputs(name)
    if graph.observed not in inputs:
        return np.broadcast_to(table, (len(previous_token), *table.shape))
    return np.moveaxis(table, inputs.index(graph.observed), 0)[previous_token]


def factorised_losses(graph: GraphSpec, tables: dict[str, np.ndarray], tokens: np.ndarray) -> np.ndarray:
    """`-log p(x_t | x_<t)` `(batch, length)` in nats: belief `(batch, *hidden_order)`, one node at a time."""
    tables = {name: np.asarray(table, np.float64) for name, table in tables.items()}
    hidden = graph.hidden_order
    batch, length = tokens.shape
    letter = {name: i + 1 for i, name in enumerate(hidden)}
    belief = np.zeros((batch, *(graph.node(name).states for name in hidden)))
    belief[(slice(None), *([0] * len(hidden)))] = 1.0
    emission = np.moveaxis(tables[graph.observed], -1, 0)  # (V, *X parents)
    parents_of_x = graph.inputs(graph.observed)
    emission_axes = sorted(range(len(parents_of_x)), key=lambda i: hidden.index(parents_of_x[i]))
    losses = np.zeros((batch, length))
    previous_token = np.zeros(batch, np.int64)
    for t in range(length):
        for name in hidden:
            rows = _selected_rows(graph, tables[name], name, previous_token)
            parents = [p for p in graph.inputs(name)[1:] if p != graph.observed]
            new = len(hidden) + 1
            belief = np.einsum(belief, [0, *letter.values()],
                               rows, [0, letter[name], *(letter[p] for p in parents), new],
                               [0, *(new if h == name else letter[h] for h in hidden)])
        likelihood = np.transpose(emission[tokens[:, t]], (0, *(1 + i for i in emission_axes)))
        shape = [batch] + [graph.node(h).states if h in parents_of_x else 1 for h in hidden]
        belief = belief * likelihood.reshape(shape)
        mass = belief.reshape(batch, -1).sum(axis=1)
        belief = belief / mass.reshape((batch,) + (1,) * len(hidden))
        losses[:, t] = -np.log(mass)
        previous_token = tokens[:, t]
    return losses


def dense_transitions(graph: GraphSpec, tables: dict[str, np.ndarray]) -> np.ndarray:
    """`(V, S, S)`: `p(hidden[t] = s' | hidden[t-1] = s, X[t-1] = x)`, states C-order over `hidden_order`."""
    hidden = graph.hidden_order
    sizes = [graph.node(name).states for name in hidden]
    states = np.array(list(itertools.product(*(range(size) for size in sizes))))  # (S, n)
    vocab = np.arange(graph.vocab_size)[:, None, None]
    previous, current = states[None, :, None, :], states[None, None, :, :]
    matrix = np.ones((graph.vocab_size, len(states), len(states)))
    for i, name in enumerate(hidden):
        index = []
        for parent in graph.inputs(name):
            if parent == name:
                index.append(previous[..., i])
            elif parent == graph.observed:
                index.append(vocab)
            else:
                index.append(current[..., hidden.index(parent)])
        matrix = matrix * np.asarray(tables[name], np.float64)[(*index, current[..., i])]
    return matrix


def _dense_emission(graph: GraphSpec, tables: dict[str, np.ndarray]) -> np.ndarray:
    """`(S, V)`: `p(X = x | hidden values s)`, states C-order over `hidden_order`."""
    hidden = graph.hidden_order
    states = np.array(list(itertools.product(*(range(graph.node(name).states) for name in hidden))))
    parents_of_x = graph.inputs(graph.observed)
    return np.asarray(tables[graph.observed], np.float64)[tuple(states[:, hidden.index(p)] for p in parents_of_x)]


def dense_burn_in_prior(graph: GraphSpec, tables: dict[str, np.ndarray], steps: int) -> np.ndarray:
    """`(S,)`: the hidden values' distribution at step `steps` of a chain started at the zero state, no token seen.

    The joint `(V, S)` of (X[t-1], hidden[t-1]) is advanced by the dense transition of each token value and
    summed over it, then multiplied by the emission: a Markov chain on (hidden, X) written out densely.
    """
    transitions = dense_transitions(graph, tables)
    emission = _dense_emission(graph, tables)
    joint = np.zeros((graph.vocab_size, transitions.shape[1]))
    joint[0, 0] = 1.0
    for _ in range(steps):
        joint = np.einsum("xs,xsr->r", joint, transitions)[None] * emission.T
    return np.einsum("xs,xsr->r", joint, transitions)


def dense_losses(graph: GraphSpec, tables: dict[str, np.ndarray], tokens: np.ndarray,
                 prior: np.ndarray | None = None) -> np.ndarray:
    """`-log p(x_t | x_<t)` `(batch, length)` in nats with the dense (S, S) product transition.

    prior: None starts from the zero state; else `(S,)`, the hidden values' distribution at step 0
    (`dense_burn_in_prior`), which replaces the first step's transition.
    """
    transitions = dense_transitions(graph, tables)
    emission = _dense_emission(graph, tables)
    batch, length = tokens.shape
    belief = np.zeros((batch, len(emission)))
    belief[:, 0] = 1.0
    previous_token = np.zeros(batch, np.int64)
    losses = np.zeros((batch, length))
    for t in range(length):
        advanced = np.empty_like(belief)
        for value in np.unique(previous_token):
            rows = previous_token == value
            advanced[rows] = belief[rows] @ transitions[value]
        if prior is not None and t == 0:
            advanced = np.broadcast_to(np.asarray(prior, np.float64), belief.shape)
        belief = advanced * emission[:, tokens[:, t]].T
        mass = belief.sum(axis=1)
        belief = belief / mass[:, None]
        losses[:, t] = -np.log(mass)
        previous_token = tokens[:, t]
    return losses

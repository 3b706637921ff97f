"""Dirichlet-drawn kernels of a GSSM, as a pytree of arrays.

`Kernels` maps each node name to its parameters:

* `kernel: fullrank`: one array of shape `(*input_sizes, states)`; every row (one joint value of
  the inputs, own previous value first for hidden nodes, then parents in listed order) is an
  independent Dirichlet(alpha * 1) draw.
* `kernel: product`: a tuple with one array per input, of shape `(input_size, states)`; the
  conditional is the renormalised elementwise product of the selected rows, each clipped at
  `PRODUCT_CLIP` first so that the product is never all zero.

Modes (DESIGN.md §2) are applied when the kernels are drawn: `dead` swaps every row's largest entry
into column 0; `slow` swaps it into the column of the node's own previous value (for product
kernels: in the own-previous-value table only). `context` nodes are drawn here too, but the
sampler redraws them for every sequence (see `sample_node_kernel`), so a model must infer them in
context. (The seed's codebase redrew them per batch or per step; ours is per sequence.)

Dirichlet rows are sampled in log space (`log Gamma` then softmax), which stays exact for alpha as
small as 1e-4 where plain gamma sampling underflows to 0/0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gssm_jax.graph import GraphSpec

PRODUCT_CLIP = 1e-10

Kernel = jax.Array | tuple[jax.Array, ...]
Kernels = dict[str, Kernel]


def sample_dirichlet(key: jax.Array, alpha: float, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Rows of Dirichlet(alpha * 1) along the last axis of `shape`, exact for tiny alpha.

    Returns:
      probabilities of shape `shape`, each last-axis row summing to 1 (entries below the float
      resolution come out as exact zeros, as they would in exact arithmetic rounded to `dtype`).
    """
    log_gamma = jax.random.loggamma(key, jnp.asarray(alpha, dtype), shape, dtype=dtype)
    return jax.nn.softmax(log_gamma, axis=-1)


def _swap_largest_into(rows: jax.Array, target_column: jax.Array) -> jax.Array:
    """Swaps each row's largest entry with the entry at `target_column` (broadcast over rows)."""
    columns = jnp.arange(rows.shape[-1])
    largest = jnp.argmax(rows, axis=-1)[..., None]
    largest_value = jnp.max(rows, axis=-1, keepdims=True)
    target = jnp.broadcast_to(target_column, rows.shape[:-1])[..., None]
    target_value = jnp.take_along_axis(rows, target, axis=-1)
    swapped = jnp.where(columns == largest, target_value, rows)
    return jnp.where(columns == target, largest_value, swapped)


def _own_previous_index(shape: tuple[int, ...]) -> jax.Array:
    """Index along axis 0 (the own previous value), broadcastable to rows of `shape`."""
    return jnp.arange(shape[0]).reshape((shape[0],) + (1,) * (len(shape) - 2))


def sample_node_kernel(key: jax.Array, graph: GraphSpec, name: str, dtype=jnp.float32) -> Kernel:
    """Draws one node's kernel (fullrank array or product tuple), with its mode applied."""
    node = graph.node(name)
    if node.kernel == "fullrank":
        table = sample_dirichlet(key, node.alpha, graph.kernel_shape(name), dtype)
        if node.mode == "dead":
            table = _swap_largest_into(table, jnp.asarray(0))
        elif node.mode == "slow":
            table = _swap_largest_into(table, _own_previous_index(table.shape))
        return table
    tables = []
    for index, (input_key, size) in enumerate(
        zip(jax.random.split(key, len(graph.inputs(name))), graph.input_sizes(name), strict=True)
    ):
        table = sample_dirichlet(input_key, node.alpha, (size, node.states), dtype)
        if node.mode == "dead":
            table = _swap_largest_into(table, jnp.asarray(0))
        elif node.mode == "slow" and index == 0:
            table = _swap_largest_into(table, jnp.arange(size))
        tables.append(table)
    return tuple(tables)


def sample_kernels(key: jax.Array, graph: GraphSpec, dtype=jnp.float32) -> Kernels:
    """Draws the kernels of every node; node i (config order) uses `fold_in(key, i)`.

    Args:
      key: a `jax.random.key`.
      graph: the validated graph (static).
      dtype: float dtype of the probabilities.

    Returns:
      `{name: kernel}` for every node, context nodes included (the sampler redraws those per
      sequence).
    """
    return {
        node.name: sample_node_kernel(jax.random.fold_in(key, index), graph, node.name, dtype)
        for index, node in enumerate(graph.nodes)
    }


def product_conditional(tables: tuple[jax.Array, ...]) -> jax.Array:
    """Full conditional `(*input_sizes, states)` of a product kernel from its per-input tables."""
    num_inputs = len(tables)
    states = tables[0].shape[-1]
    product = jnp.ones((1,) * num_inputs + (states,), tables[0].dtype)
    for axis, table in enumerate(tables):
        shape = [1] * num_inputs + [states]
        shape[axis] = table.shape[0]
        product = product * jnp.clip(table, PRODUCT_CLIP, None).reshape(shape)
    return product / jnp.sum(product, axis=-1, keepdims=True)


def conditional_table(graph: GraphSpec, kernels: Kernels, name: str) -> jax.Array:
    """The full conditional probabilities of a node.

    Returns:
      array of shape `(*input_sizes, states)` with inputs ordered as `graph.inputs(name)` (own
      previous value for hidden nodes, then parents in the listed order); last axis sums to 1.
    """
    kernel = kernels[name]
    if graph.node(name).kernel == "fullrank":
        return kernel
    return product_conditional(kernel)


def conditional_tables(graph: GraphSpec, kernels: Kernels) -> dict[str, jax.Array]:
    """`conditional_table` of every node."""
    return {node.name: conditional_table(graph, kernels, node.name) for node in graph.nodes}

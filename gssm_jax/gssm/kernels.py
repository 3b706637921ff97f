"""Dirichlet-drawn kernels of a GSSM, as a pytree of arrays.

`Kernels` maps each node name to its parameters:

* `kernel: fullrank`: one array of shape `(*input_sizes, states)`; every row (one joint value of
  the inputs, own previous value first for hidden nodes, then parents in listed order) is an
  independent Dirichlet(alpha * 1) draw.
* `kernel: product`: a tuple with one array per input, of shape `(input_size, states)`; the
  conditional is the renormalised elementwise product of the selected rows, each clipped at
  `PRODUCT_CLIP` first so that the product is never all zero.

Modes are applied when the kernels are drawn: `dead` swaps every row's largest entry
into column 0; `slow` swaps it into the column of the node's own previous value (for product
kernels: in the own-previous-value table only). `context` nodes are drawn here too, but the
sampler redraws them for every sequence (see `sample_node_kernel`), so a model must infer them in
context. (Composable-llm's codebase redrew them per batch or per step; ours is per sequence.)

Dirichlet rows are sampled in log space (`log Gamma` then softmax), which stays exact for alpha as
small as 1e-4 where plain gamma sampling underflows to 0/0. `sample_log_gamma` draws the whole array
at once (Marsaglia-Tsang, rejected elements redrawn in rounds): `jax.random.loggamma` runs a
per-element rejection loop and took 12-30 s for the 4.2 M variates of eight_by_four's X kernel on a
2-core CPU.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from gssm_jax import keys
from gssm_jax.gssm.graph import GraphSpec

PRODUCT_CLIP = 1e-10
# `sample_log_gamma` redraws rejected elements in pools of max(POOL_MIN, n // POOL_FRACTION) elements: about
# 4% of proposals are rejected, so one pool usually holds all of them.
POOL_MIN = 1024
POOL_FRACTION = 16

Kernel = jax.Array | tuple[jax.Array, ...]
Kernels = dict[str, Kernel]


def _log_open_uniform(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """log U for U uniform on the open interval (0, 1), at 32-bit resolution: U = (k + 1/2) / 2^32.

    The 2^32-point grid (rather than float32's 2^23-point uniforms) keeps -log U = Exp(1) exact out to
    22.2, i.e. it truncates only an event of probability 2.3e-10 per draw.
    """
    bits = jax.random.bits(key, shape, jnp.uint32)
    return jnp.log(bits.astype(dtype) + 0.5) - jnp.asarray(32 * math.log(2.0), dtype)


def _marsaglia_tsang(key: jax.Array, d: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One Marsaglia-Tsang proposal per element: (log of the proposed Gamma(d + 1/3) variate, accepted?).

    Args:
      key: fresh key of this round.
      d, c: `b - 1/3` and `1 / sqrt(9 d)` of each element's shape b >= 1, arrays of one shape.
    """
    normal_key, uniform_key = jax.random.split(key)
    x = jax.random.normal(normal_key, d.shape, d.dtype)
    cube_root = 1 + c * x
    log_v = 3 * jnp.log(jnp.where(cube_root > 0, cube_root, 1))
    accept = (cube_root > 0) & (
        _log_open_uniform(uniform_key, d.shape, d.dtype) < 0.5 * x * x + d * (1 - jnp.exp(log_v) + log_v))
    return jnp.log(d) + log_v, accept


@functools.partial(jax.jit, static_argnames=("shape", "dtype", "pool_size"))
def sample_log_gamma(key: jax.Array, alpha: jax.Array | float, shape: tuple[int, ...], dtype=jnp.float32,
                     pool_size: int | None = None) -> jax.Array:
    """log G with G ~ Gamma(alpha, 1), elementwise, exact in log space down to tiny alpha (1e-4 and below).

    It uses Gamma(alpha) = Gamma(alpha + 1) * U^(1/alpha) with U uniform on (0, 1), i.e.
    log G = log G' + log(U) / alpha, so nothing underflows however small alpha is. G' ~ Gamma(b), b = alpha + 1,
    is drawn by Marsaglia and Tsang's method (2000): with d = b - 1/3, c = 1 / sqrt(9 d), x ~ N(0, 1) and
    v = (1 + c x)^3, accept G' = d v when v > 0 and log u < x^2 / 2 + d (1 - v + log v).

    Every element proposes once (a proposal is accepted with probability > 0.95 at b >= 1). The
    rejected ones are then gathered, up to `pool_size` at a time, into a pool whose rejected
    members propose again, round after round, until the pool is all accepted; then the next pool, until
    no element is rejected. Every proposal uses fresh keys (`fold_in` of the pool and round), so each
    element is its first accepted proposal: exact rejection sampling, and a pure function of `key` (and of
    alpha, shape, dtype). Redrawing the ~5% rejected elements in a pool rather than the whole array saves
    most of the random bits (a million elements need ~6 rounds until none is rejected).

    The boost is applied at every alpha, not only below 1, so that under one key the draws move
    continuously with alpha (common random numbers in `gssm_jax.difficulty`): a row's largest entry at
    small alpha is the one with the largest U, whatever alpha; only the rare elements whose acceptance
    flips between two alphas jump.

    Args:
      key: a `jax.random.key`.
      alpha: shape parameter(s) > 0, a scalar or an array broadcastable to `shape`.
      shape: output shape (static).
      dtype: float dtype of the result (static).
      pool_size: rejected elements redrawn together (static); default max(POOL_MIN, n // POOL_FRACTION)
        for n elements. It changes the draws, not their distribution.

    Returns:
      log G, array of `shape` and `dtype` (natural log); nan where alpha is not a finite number > 0.
    """
    size = math.prod(shape)
    alpha = jnp.broadcast_to(jnp.asarray(alpha, dtype), shape).reshape(size)
    valid = (alpha > 0) & jnp.isfinite(alpha)  # an invalid alpha would never be accepted: it gives nan instead
    d = jnp.where(valid, alpha + 1, 1) - jnp.asarray(1 / 3, dtype)
    c = jax.lax.rsqrt(9 * d)
    boost_key, first_key, pools_key = jax.random.split(key, 3)
    log_g, accept = _marsaglia_tsang(first_key, d, c)
    pool_size = min(size, pool_size or max(POOL_MIN, size // POOL_FRACTION))

    def next_pool(state: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
        pool_index, log_g, rejected = state
        index = jnp.nonzero(rejected, size=pool_size, fill_value=size)[0]  # `size` pads: gathers 1, scatters nothing
        pool_d, pool_c = (x.at[index].get(mode="fill", fill_value=1) for x in (d, c))
        pool_key = jax.random.fold_in(pools_key, pool_index)

        def next_round(pool_state: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
            round_index, values, pool_rejected = pool_state
            proposal, accept = _marsaglia_tsang(jax.random.fold_in(pool_key, round_index), pool_d, pool_c)
            return round_index + 1, jnp.where(pool_rejected & accept, proposal, values), pool_rejected & ~accept

        pool_start = (jnp.asarray(0, jnp.uint32), jnp.zeros(pool_size, dtype), index < size)
        _, values, _ = jax.lax.while_loop(lambda pool_state: jnp.any(pool_state[2]), next_round, pool_start)
        return (pool_index + 1, log_g.at[index].set(values, mode="drop"),
                rejected.at[index].set(False, mode="drop"))

    start = (jnp.asarray(0, jnp.uint32), log_g, valid & ~accept)
    _, log_g, _ = jax.lax.while_loop(lambda state: jnp.any(state[2]), next_pool, start)
    boost = _log_open_uniform(boost_key, (size,), dtype) / jnp.where(valid, alpha, 1)
    return jnp.where(valid, log_g + boost, jnp.nan).reshape(shape)


def sample_dirichlet(key: jax.Array, alpha: float, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Rows of Dirichlet(alpha * 1) along the last axis of `shape`, exact for tiny alpha.

    Normalised independent Gamma(alpha) variates, computed as a softmax of `sample_log_gamma`.

    Returns:
      probabilities of shape `shape`, each last-axis row summing to 1 (entries below the float
      resolution come out as exact zeros, as they would in exact arithmetic rounded to `dtype`).
    """
    return jax.nn.softmax(sample_log_gamma(key, alpha, tuple(shape), dtype), axis=-1)


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
    """Draws the kernels of every node; node i (config order) uses `keys.node_kernel_key(key, i)`.

    Args:
      key: a `jax.random.key`.
      graph: the validated graph (static).
      dtype: float dtype of the probabilities.

    Returns:
      `{name: kernel}` for every node, context nodes included (the sampler redraws those per
      sequence).
    """
    return {
        node.name: sample_node_kernel(keys.node_kernel_key(key, index), graph, node.name, dtype)
        for index, node in enumerate(graph.nodes)
    }


def product_conditional(tables: tuple[jax.Array, ...]) -> jax.Array:
    """Full conditional `(*input_sizes, states)` of a product kernel from its per-input tables `(input_size, states)`.

    Each row is clipped at `PRODUCT_CLIP` in probability, then the product is formed in
    log space (the sum of the selected rows' logs) and renormalised by a softmax over the last axis.
    The direct product underflows: with 5 or more inputs, (1e-10)^4 is already below float32's normal
    range, and the product of clipped rows came out as NaN or visibly wrong rows.
    """
    num_inputs = len(tables)
    states = tables[0].shape[-1]
    log_product = jnp.zeros((1,) * num_inputs + (states,), tables[0].dtype)
    for axis, table in enumerate(tables):
        shape = [1] * num_inputs + [states]
        shape[axis] = table.shape[0]
        log_product = log_product + jnp.log(jnp.clip(table, PRODUCT_CLIP, None)).reshape(shape)
    return jax.nn.softmax(log_product, axis=-1)


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


@functools.partial(jax.jit, static_argnames="graph")
def _invalid_row_counts(graph: GraphSpec, kernels: Kernels) -> dict[str, jax.Array]:
    """Rows of each non-context node's conditional table that are not probabilities (NaN, inf, negative or all 0)."""
    counts = {}
    for node in graph.nodes:
        if node.mode == "context":  # redrawn inside the sampler from its own Dirichlet draws
            continue
        rows = jnp.asarray(conditional_table(graph, kernels, node.name)).reshape(-1, node.states)
        valid = jnp.all(jnp.isfinite(rows) & (rows >= 0), axis=-1) & (jnp.sum(rows, axis=-1) > 0)
        counts[node.name] = jnp.sum(~valid)
    return counts


def check_rows(graph: GraphSpec, kernels: Kernels) -> None:
    """Raises ValueError (one line) when a node's conditional rows are not probability rows.

    The sampler's inverse-CDF thresholds of a NaN row are meaningless integers, so it would emit tokens
    from them silently. Under an outer `jit` the values are unknown and nothing is checked.
    """
    counts = _invalid_row_counts(graph.structure, kernels)  # one compilation for every alpha
    if any(isinstance(count, jax.core.Tracer) for count in counts.values()):
        return
    for name, count in jax.device_get(counts).items():
        if count:
            rows = math.prod(graph.input_sizes(name))
            raise ValueError(f"kernels[{name!r}]: {int(count)} of {rows} conditional rows are not probabilities "
                             "(NaN, inf, negative or all zero); draw the kernels with "
                             "gssm_jax.gssm.kernels.sample_kernels or fix the tables before sampling")

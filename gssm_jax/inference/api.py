"""The exact Bayes-optimal loss of a GSSM: a factorised forward algorithm.

The latent state is the joint value of all hidden nodes; the predictor knows the kernels and
conditions on every past token. Before step 0 every previous value is 0, so the belief starts as a
point mass at all-zero hidden values and X[-1] = 0. Each step applies the transition one hidden
node at a time, multiplies by the emission and normalises (the steps are spelled out in
`gssm_jax.inference.factorised`). With `initial_state="stationary"` the sequences were emitted after
`burn_in` unobserved steps (`gssm_jax.gssm.initial_state`): the belief of step 0 is then the exact
distribution of the hidden values after those steps, the burn-in's tokens summed out
(`factorised.burn_in_prior`), computed once per call and shared by every sequence.

The (S, S) product transition is never formed: memory is O(batch x S) and the cost per token is
about 2 x S x sum(hidden states) flops. Sequences are split over all devices (`shard_map`, one
shard per device) or, on a single CPU device (the default), into one piece per core run from a
thread pool, so every core is used without any flag; then they are advanced in chunks (`lax.map`).
`implementation` picks the passes: "cpu" (cache-sized chunks; for independent hidden chains, the
Experiment 1 graphs, the fast passes of `chains`; `factorised` otherwise) or "batched" (GPU/TPU:
large chunks advanced together, `chains.forward_blocks_batched`); "auto" picks by backend.

Units: `token_losses` and `negative_log_likelihood` are in nats (per token and per sequence);
`log_likelihood` is `log p(x_0..x_{T-1})` in nats per sequence, so it is <= 0; `entropy_rate` is in
nats per token.

`context` nodes have kernels redrawn for every sequence, unknown to the predictor, so the exact
loss is `-log E_K[p(x | K)]` over the Dirichlet prior of K. `context_log_likelihood` *estimates* it
by Monte Carlo over `num_draws` prior draws per sequence (log-mean-exp of per-draw likelihoods),
with a delta-method standard error; the estimate of `log p` is biased low by Jensen's inequality
(the loss biased high) and its variance grows with the sequence length. The bias shrinks as 1 / draws,
so the two halves of the draws estimate it (`ContextEstimate.bias`, Richardson); `entropy_rate`
doubles its draws until that bias is below the standard error it reports.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gssm_jax import parallel
from gssm_jax.errors import UserError
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.gssm.initial_state import DEFAULT_BURN_IN, burn_in_steps
from gssm_jax.gssm.kernels import Kernels, conditional_table, sample_node_kernel
from gssm_jax.inference import chains, factorised
from gssm_jax.inference.factorised import pairwise_sum

# A chunk of sequences whose beliefs fit in about this many bytes is advanced together through
# time; larger chunks leave the cache, smaller ones pay the loop overhead more often.
CHUNK_BYTES = 2**22
# The batched (accelerator) pass advances as many sequences together as this many bytes of belief hold.
BATCHED_CHUNK_BYTES = 2**30
# "cpu": cache-sized chunks, one piece of the batch per core; "batched": every sequence of a chunk
# advanced together by batched contractions (GPU/TPU); "auto": by `jax.default_backend()`.
IMPLEMENTATIONS = ("auto", "cpu", "batched")
DEFAULT_NUM_DRAWS = 64
# entropy_rate's default draws for context graphs: doubled from DEFAULT_NUM_DRAWS while the estimated bias
# exceeds the standard error, up to this many.
MAX_NUM_DRAWS = 4096
# Independent hidden chains with at most this many (padded) joint values take the sequences-minor
# pass (chains.forward_minor), larger ones the Kronecker-block pass.
MINOR_MAX_STATES = 4096
# Larger ones take it too, in chunks of exactly this many sequences, when a device (or per-core piece)
# has that many; otherwise the block pass. Measured on 8x4/V64 (2-core CPU, one device): chunks of 8,
# 16, 32 and 64 sequences ran at 5.7 k, 1.6 k, 9.0 k and 4.4 k tokens/s (XLA:CPU's loops over the
# (S, chunk) belief are fast only at 32), the block pass at 5.2 k; with a piece per core, 13.4 k vs 11.2 k.
LARGE_MINOR_CHUNK = 32


class EntropyRate(NamedTuple):
    """Bayes-optimal loss of a token batch.

    Attributes:
      nats_per_token: mean over sequences of `-log p(sequence) / length` (scalar).
      standard_error: standard error of that mean over sequences (sample std / sqrt(batch)); for
        context graphs it includes the Monte Carlo noise, which is independent per sequence.
      bias: context graphs: the estimated amount by which `nats_per_token` exceeds the exact rate
        (Jensen's bias of the Monte Carlo estimate, from `ContextEstimate.bias`); 0 for exact rates.
    """

    nats_per_token: jax.Array
    standard_error: jax.Array
    bias: jax.Array | float = 0.0


class ContextEstimate(NamedTuple):
    """Monte Carlo estimate of the likelihood when some kernels are unknown (`context` nodes).

    Attributes:
      log_likelihood: `(batch,)` estimate of `log p(sequence)`, nats per sequence.
      standard_error: `(batch,)` delta-method standard error of that estimate over the draws.
      token_losses: `(batch, length)` estimate of `-log p(x_t | x_<t)`, nats per token (differences
        of the estimated log-likelihoods of consecutive prefixes).
      bias: `(batch,)` estimated bias of `log_likelihood` (<= 0 in expectation): with D draws the bias
        is ~ -c / D, so the mean of the two half-draw estimates minus the full estimate estimates it.
    """

    log_likelihood: jax.Array
    standard_error: jax.Array
    token_losses: jax.Array
    bias: jax.Array


# ---- public API ------------------------------------------------------------------------------------


def token_losses(graph: GraphSpec, kernels: Kernels, tokens, *, implementation: str = "auto",
                 initial_state: str = "zeros", burn_in: int = DEFAULT_BURN_IN) -> jax.Array:
    """The Bayes-optimal next-token loss at every position, exactly.

    Args:
      graph: the graph (static); must have no `context` nodes (see `context_log_likelihood`).
      kernels: the true kernels (`gssm_jax.gssm.kernels.sample_kernels`, or numpy tables
        `(*input_sizes, states)`); computed in their float dtype (float32 unless x64 is enabled).
      tokens: integer `(batch, length)` (uint8, int32 or int64) in [0, V), V = X's states; values outside
        raise a ValueError (checked outside `jit` only: traced tokens cannot be inspected).
      implementation: "auto" (by `jax.default_backend()`), "cpu" or "batched" (`IMPLEMENTATIONS`).
      initial_state: how the sequences were sampled (`sample_tokens`' keyword, `config.data.initial_state`):
        "zeros" (default) or "stationary", whose unobserved burn-in is summed out exactly.
      burn_in: the burn-in steps under "stationary" (`config.data.burn_in`).

    Returns:
      `(batch, length)` float: `-log p(x_t | x_<t)` in nats per token; +inf where the sequence is
      impossible under the kernels.
    """
    _check_exact(graph)
    tokens = _check_tokens(graph, tokens)
    tables = _tables(graph, kernels)
    return _token_losses(graph, tables, tokens, implementation, _prior(graph, tables, initial_state, burn_in))


def negative_log_likelihood(graph: GraphSpec, kernels: Kernels, tokens, *, implementation: str = "auto",
                            initial_state: str = "zeros", burn_in: int = DEFAULT_BURN_IN) -> jax.Array:
    """`-log p(x_0..x_{T-1})` of every sequence, in nats per sequence (>= 0); arguments as `token_losses`."""
    return _sequence_sums(token_losses(graph, kernels, tokens, implementation=implementation,
                                       initial_state=initial_state, burn_in=burn_in))


def log_likelihood(graph: GraphSpec, kernels: Kernels, tokens, *, implementation: str = "auto",
                   initial_state: str = "zeros", burn_in: int = DEFAULT_BURN_IN) -> jax.Array:
    """`log p(x_0..x_{T-1})` of every sequence, in nats per sequence (<= 0); arguments as `token_losses`."""
    return -negative_log_likelihood(graph, kernels, tokens, implementation=implementation,
                                    initial_state=initial_state, burn_in=burn_in)


def context_log_likelihood(graph: GraphSpec, kernels: Kernels, tokens, key: jax.Array,
                           num_draws: int = DEFAULT_NUM_DRAWS, *, initial_state: str = "zeros",
                           burn_in: int = DEFAULT_BURN_IN) -> ContextEstimate:
    """Monte Carlo estimate of the likelihood when `context` kernels are unknown to the predictor.

    For every sequence, `num_draws` kernels of each context node are drawn independently from the
    node's prior (`sample_node_kernel`), the exact forward pass runs under each draw, and
    `log p(x) ~= log mean_d p(x | K_d)`. Non-context nodes use `kernels`. This is an estimate:
    biased low by Jensen's inequality, with a variance that grows with the length.

    Args:
      graph: the graph (static), with at least one context node.
      kernels: kernels of the non-context nodes (the context entries are ignored).
      tokens: integer `(batch, length)`.
      key: a `jax.random.key` for the draws.
      num_draws: number of prior draws per sequence (even, >= 2: for the standard error and the bias).
      initial_state, burn_in: as `token_losses`; only "zeros" (or no burn-in) is implemented here, since a
        context kernel unknown to the predictor would also shape the burn-in.

    Returns:
      a `ContextEstimate` (nats).
    """
    _check_zeros(graph, initial_state, burn_in)
    if not _context_nodes(graph):
        raise UserError("context_log_likelihood: the graph has no context nodes; use log_likelihood (exact)")
    if num_draws < 2 or num_draws % 2:
        raise UserError(f"num_draws is {num_draws}; use an even number >= 2 (the standard error and the bias "
                        "estimate compare draws)")
    tokens = _check_tokens(graph, tokens)
    _check_kernels(graph, kernels, skip=_context_nodes(graph))
    tables = {name: conditional_table(graph, kernels, name)
              for name in _node_names(graph) if name not in _context_nodes(graph)}
    return _context_estimate(graph, tables, tokens, key, num_draws)


def entropy_rate(graph: GraphSpec, kernels: Kernels, tokens, *, key: jax.Array | None = None,
                 num_draws: int | None = None, implementation: str = "auto", initial_state: str = "zeros",
                 burn_in: int = DEFAULT_BURN_IN) -> EntropyRate:
    """Bayes-optimal loss of a batch in nats per token, with its standard error over sequences.

    Exact (up to float rounding) when the graph has no context nodes; otherwise a Monte Carlo
    estimate (`context_log_likelihood`), for which `key` is required.

    Args:
      graph: the graph (static).
      kernels: the true kernels.
      tokens: integer `(batch, length)`.
      key: `jax.random.key` for the context-node draws; only for graphs with context nodes.
      num_draws: prior draws per sequence for context nodes; None: DEFAULT_NUM_DRAWS, doubled (fresh
        draws from the same key) while the estimated bias exceeds the standard error, up to MAX_NUM_DRAWS.
      implementation: the exact pass's implementation (`token_losses`); context graphs use "cpu".
      initial_state, burn_in: as `token_losses` (context graphs: "zeros" only).

    Returns:
      `EntropyRate(nats_per_token, standard_error, bias)`, scalars; check `bias` against `standard_error`
      for context graphs (it stays above only when MAX_NUM_DRAWS draws were not enough).
    """
    tokens = _check_tokens(graph, tokens)
    if _context_nodes(graph):
        _check_zeros(graph, initial_state, burn_in)
        if key is None:
            raise UserError(
                f"graph has context nodes {list(_context_nodes(graph))}, whose kernels the predictor does not know: "
                "pass key=jax.random.key(...) for the Monte Carlo estimate"
            )
        draws = num_draws or DEFAULT_NUM_DRAWS
        while True:
            estimate = context_log_likelihood(graph, kernels, tokens, key, draws)
            rate = _mean_and_standard_error(-estimate.log_likelihood / tokens.shape[1])
            bias = -jnp.mean(estimate.bias) / tokens.shape[1]
            if num_draws is not None or draws >= MAX_NUM_DRAWS or bias <= rate.standard_error:
                return rate._replace(bias=bias)
            draws *= 2
    sequence_losses = negative_log_likelihood(graph, kernels, tokens, implementation=implementation,
                                              initial_state=initial_state, burn_in=burn_in)
    return _mean_and_standard_error(sequence_losses / tokens.shape[1])


# ---- checks at the boundary -----------------------------------------------------------------------


def _context_nodes(graph: GraphSpec) -> tuple[str, ...]:
    return tuple(node.name for node in graph.nodes if node.mode == "context")


def _node_names(graph: GraphSpec) -> tuple[str, ...]:
    return (*graph.hidden_order, graph.observed)


def _check_exact(graph: GraphSpec) -> None:
    _check_graph(graph)
    if _context_nodes(graph):
        raise UserError(
            f"graph has context nodes {list(_context_nodes(graph))}, whose kernels the predictor does not know; "
            "the exact forward pass does not apply: use context_log_likelihood or entropy_rate(..., key=...)"
        )


def _check_zeros(graph: GraphSpec, initial_state: str, burn_in: int) -> None:
    _check_graph(graph)
    if burn_in_steps(initial_state, burn_in) and _context_nodes(graph):
        raise UserError(f"config.data.initial_state='stationary' has no exact likelihood for graphs with context nodes "
                        f"{list(_context_nodes(graph))} (their unknown kernels also shape the burn-in); use 'zeros'")


def _prior(graph: GraphSpec, tables: dict[str, jax.Array], initial_state: str, burn_in: int) -> jax.Array | None:
    """The hidden values' distribution at step 0 after the burn-in, `(S,)`; None for the zero state."""
    steps = burn_in_steps(initial_state, burn_in)
    return _burn_in_prior(graph.structure, tables, steps) if steps else None


_burn_in_prior = jax.jit(factorised.burn_in_prior, static_argnames=("graph", "steps"))


def _check_tokens(graph: GraphSpec, tokens) -> jax.Array:
    _check_graph(graph)
    if not isinstance(tokens, jax.Array):
        tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise UserError(f"tokens must be an integer array (batch, length), got {tokens.dtype} {tokens.shape}")
    if tokens.shape[1] == 0:
        raise UserError("tokens has length 0; the loss needs at least one token per sequence")
    if tokens.size and not isinstance(tokens, jax.core.Tracer):
        # One reduction before dispatch (a host array never leaves the host for it): out-of-range tokens would
        # otherwise index the emission table out of bounds and come back as NaN losses.
        low, high = (int(value) for value in jax.device_get((tokens.min(), tokens.max())))
        if low < 0 or high >= graph.vocab_size:
            raise UserError(f"tokens must lie in [0, {graph.vocab_size}) (the states of X), got values in "
                            f"[{low}, {high}]")
    return jnp.asarray(tokens).astype(jnp.int32)


def _tables(graph: GraphSpec, kernels: Kernels) -> dict[str, jax.Array]:
    _check_kernels(graph, kernels)
    return {name: jnp.asarray(conditional_table(graph, kernels, name)) for name in _node_names(graph)}


def _check_graph(graph: GraphSpec) -> None:
    if not isinstance(graph, GraphSpec):
        raise UserError(f"graph must be a GraphSpec (gj.GraphSpec.from_config(graph_config)), got a "
                        f"{type(graph).__name__}")


def _check_kernels(graph: GraphSpec, kernels: Kernels, skip: tuple[str, ...] = ()) -> None:
    """One line when `kernels` were not sampled for `graph` (other nodes, or tables of other shapes)."""
    fix = "pass the kernels sampled for this graph (gj.sample_kernels(key, graph))"
    if not hasattr(kernels, "keys"):
        raise UserError(f"kernels must be a dict {{node name: kernel}}, got a {type(kernels).__name__}; {fix}")
    names = set(_node_names(graph)) - set(skip)
    missing, unknown = sorted(names - set(kernels)), sorted(set(kernels) - set(_node_names(graph)))
    if missing or unknown:
        found = [*([f"no kernel for this graph's nodes {', '.join(missing)}"] if missing else []),
                 *([f"kernels of nodes {', '.join(unknown)} that this graph lacks"] if unknown else [])]
        raise UserError(f"kernels are for another graph ({' and '.join(found)}); {fix}")
    for name in sorted(names):
        node = graph.node(name)
        if node.kernel == "fullrank":
            expected, shape = graph.kernel_shape(name), np.shape(kernels[name])
        else:
            expected = tuple((size, node.states) for size in graph.input_sizes(name))
            shape = tuple(np.shape(table) for table in kernels[name])
        if tuple(shape) != tuple(expected):
            raise UserError(f"kernels[{name!r}] has shape {tuple(shape)} but node {name!r} of this graph needs "
                            f"{tuple(expected)}: the kernels are for another graph; {fix}")


# ---- the forward pass: sequences over devices (or cores), then chunks ----------------------------------


def resolve_implementation(implementation: str) -> str:
    """"cpu" or "batched" for an `implementation` argument; "auto" picks by `jax.default_backend()`."""
    if implementation not in IMPLEMENTATIONS:
        raise UserError(f"implementation is {implementation!r}; use one of {', '.join(IMPLEMENTATIONS)}")
    if implementation == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "batched"
    return implementation


def _pass(graph: GraphSpec, per_sequence: frozenset[str], implementation: str = "cpu", per_device: int = 1) -> str:
    """The fastest forward pass that applies: "minor", "blocks", "batched_blocks" or "general".

    `per_device`: sequences each device (or per-core piece) advances.
    """
    if per_sequence or not chains.independent_chains(graph):
        return "general"
    if implementation == "batched":
        return "batched_blocks"
    if chains.padded_states(graph) <= MINOR_MAX_STATES or per_device >= LARGE_MINOR_CHUNK:
        return "minor"
    return "blocks"


def _chunk_size(graph: GraphSpec, kind: str, per_device: int, itemsize: int, implementation: str) -> int:
    if kind == "blocks":
        return per_device  # forward_blocks advances one sequence at a time itself
    if kind == "minor" and chains.padded_states(graph) > MINOR_MAX_STATES:
        return LARGE_MINOR_CHUNK
    budget = BATCHED_CHUNK_BYTES if implementation == "batched" else CHUNK_BYTES
    states = chains.padded_states(graph) if kind == "minor" else graph.num_latent_states
    return max(1, min(per_device, budget // (states * itemsize)))


def _forward_chunk(graph: GraphSpec, tables: dict[str, jax.Array], tokens: jax.Array,
                   per_sequence: frozenset[str], kind: str, prior: jax.Array | None = None) -> jax.Array:
    """Token losses `(chunk, length)` of one chunk of sequences by pass `kind` (`_pass`), in nats per token."""
    if kind == "minor":
        return chains.forward_minor(graph, tables, tokens, prior)
    if kind == "blocks":
        return chains.forward_blocks(graph, tables, tokens, prior)
    if kind == "batched_blocks":
        return chains.forward_blocks_batched(graph, tables, tokens, prior)
    return factorised.forward_chunk(graph, tables, tokens, per_sequence, prior)


@functools.partial(jax.jit, static_argnames=("graph", "per_sequence", "implementation"))
def _chunked_forward(graph: GraphSpec, tables: dict[str, jax.Array], tokens: jax.Array,
                     per_sequence: frozenset[str] = frozenset(), implementation: str = "cpu",
                     prior: jax.Array | None = None) -> jax.Array:
    """Token losses `(batch, length)`: sequences split over all devices, then into chunks on each.

    `tables[name]` has a leading batch axis for the names in `per_sequence`; `implementation` is
    "cpu" or "batched" (`resolve_implementation`); `prior`: None (the zero state) or the hidden
    values' distribution at step 0, `(S,)` (`factorised.burn_in_prior`), shared by every sequence.
    """
    batch, length = tokens.shape
    devices = jax.devices()[:batch]
    dtype = jnp.result_type(*tables.values())
    per_device = -(-batch // len(devices))
    kind = _pass(graph, per_sequence, implementation, per_device)
    chunk = _chunk_size(graph, kind, per_device, jnp.dtype(dtype).itemsize, implementation)
    per_device = -(-per_device // chunk) * chunk
    padding = per_device * len(devices) - batch

    def pad(array):
        return jnp.concatenate([array, jnp.zeros((padding, *array.shape[1:]), array.dtype)]) if padding else array

    shared = {name: table for name, table in tables.items() if name not in per_sequence}
    own = {name: pad(tables[name]) for name in per_sequence}

    def device_losses(shared, own, tokens, prior):
        def split(array):
            return array.reshape(-1, chunk, *array.shape[1:])

        def run(chunk_inputs):
            chunk_tokens, chunk_tables = chunk_inputs
            return _forward_chunk(graph, {**shared, **chunk_tables}, chunk_tokens, per_sequence, kind, prior)

        return lax.map(run, (split(tokens), jax.tree.map(split, own))).reshape(per_device, length)

    mesh = parallel.data_parallel_mesh(devices)
    batch_spec = jax.P("data")
    losses = jax.shard_map(device_losses, mesh=mesh, in_specs=(jax.P(), batch_spec, batch_spec, jax.P()),
                           out_specs=batch_spec, check_vma=False)(shared, own, pad(tokens), prior)
    return losses[:batch]


def _cpu_parts(batch: int, implementation: str) -> int:
    """Pieces of the batch run concurrently on a single CPU device: one per core available."""
    if implementation != "cpu" or jax.local_device_count() > 1:
        return 1
    return max(1, min(batch, len(os.sched_getaffinity(0))))


def _token_losses(graph: GraphSpec, tables: dict[str, jax.Array], tokens: jax.Array,
                  implementation: str = "auto", prior: jax.Array | None = None) -> jax.Array:
    """`_chunked_forward`, with the batch cut into one equal piece per core on a single CPU device.

    A jitted call runs its sequential time loop on one thread; XLA:CPU runs separate calls on
    separate threads, so pieces dispatched from a thread pool use every core with no device count
    or XLA flag set by the caller (several CPU devices are used through `_chunked_forward`'s mesh).
    """
    implementation = resolve_implementation(implementation)
    # Under a trace (token_losses inside the caller's jit) the pieces cannot run on host threads.
    parts = 1 if isinstance(tokens, jax.core.Tracer) else _cpu_parts(tokens.shape[0], implementation)
    if parts == 1:
        return _chunked_forward(graph, tables, tokens, implementation=implementation, prior=prior)
    batch = tokens.shape[0]
    size = -(-batch // parts)
    padded = jnp.concatenate([tokens, jnp.zeros((size * parts - batch, tokens.shape[1]), tokens.dtype)])

    def piece(index):
        return jax.block_until_ready(
            _chunked_forward(graph, tables, padded[index * size:(index + 1) * size], implementation=implementation,
                             prior=prior))

    with concurrent.futures.ThreadPoolExecutor(parts) as pool:
        losses = list(pool.map(piece, range(parts)))
    return jnp.concatenate(losses)[:batch]


# ---- context nodes: Monte Carlo over kernel draws ------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("graph", "num_draws"))
def _context_estimate(graph: GraphSpec, tables: dict[str, jax.Array], tokens: jax.Array, key: jax.Array,
                      num_draws: int) -> ContextEstimate:
    batch, _ = tokens.shape
    context = _context_nodes(graph)
    dtype = jnp.result_type(*tables.values()) if tables else jnp.float32

    def draw_tables(draw_key):
        def one_sequence(sequence_key):
            node_keys = jax.random.split(sequence_key, len(context))
            return {name: conditional_table(graph, {name: sample_node_kernel(node_key, graph, name, dtype)}, name)
                    for name, node_key in zip(context, node_keys, strict=True)}
        return jax.vmap(one_sequence)(jax.random.split(draw_key, batch))

    def one_draw(draw_key):
        per_sequence_tables = draw_tables(draw_key)
        losses = _chunked_forward(graph, {**tables, **per_sequence_tables}, tokens, per_sequence=frozenset(context))
        return jnp.cumsum(-losses, axis=1)  # log p(x_0..x_t | K_d), nats

    prefix_log_likelihoods = lax.map(one_draw, jax.random.split(key, num_draws))  # (draws, batch, length)
    prefix_estimates = jax.nn.logsumexp(prefix_log_likelihoods, axis=0) - math.log(num_draws)
    halves = prefix_log_likelihoods[:, :, -1].reshape(2, num_draws // 2, batch)
    half_estimates = jax.nn.logsumexp(halves, axis=1) - math.log(num_draws // 2)  # (2, batch)
    # Delta method: with w_d = p(x | K_d) / max_d, se(log mean w) ~= std(w) / (sqrt(D) mean(w)).
    final = prefix_log_likelihoods[:, :, -1]
    weights = jnp.exp(final - jnp.max(final, axis=0))
    standard_error = jnp.std(weights, axis=0, ddof=1) / (math.sqrt(num_draws) * jnp.mean(weights, axis=0))
    losses = -jnp.diff(prefix_estimates, axis=1, prepend=jnp.zeros((batch, 1), prefix_estimates.dtype))
    return ContextEstimate(prefix_estimates[:, -1], standard_error, losses,
                           jnp.mean(half_estimates, axis=0) - prefix_estimates[:, -1])


# ---- numerics -------------------------------------------------------------------------------------


_sequence_sums = jax.jit(pairwise_sum)


@jax.jit
def _mean_and_standard_error(values: jax.Array) -> EntropyRate:
    count = values.shape[0]
    mean = pairwise_sum(values) / count
    spread = jnp.sqrt(pairwise_sum((values - mean) ** 2) / max(count - 1, 1)) if count > 1 else jnp.nan
    return EntropyRate(mean, jnp.asarray(spread / math.sqrt(count), values.dtype))

"""The JAX sampler: exact random bits, exact thresholds, transition frequencies, semantics, sharding.

Statistical tests use a false-failure rate of 1e-6 per assertion. Transition counts pooled over time
are tested with Pearson's chi-square per input row: for a Markov chain, conditional on how often a row
is visited its next-value counts are asymptotically multinomial with that row's probabilities
(Anderson & Goodman 1957), so the pooled statistic is chi-square with sum(states - 1) degrees of
freedom over visited rows. Comparisons with the numpy reference use one time position per sequence,
so the counts are independent across sequences.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32
from scipy import stats

from gssm_jax import parallel, threefry
from gssm_jax.gssm.graph import GraphSpec, experiment1_graph_config
from gssm_jax.gssm.kernels import conditional_table, conditional_tables, sample_kernels
from gssm_jax.sampling import numpy_sampler, sampler, tables

FALSE_FAILURE_RATE = 1e-6


def _graph(config_nodes):
    return GraphSpec.from_config({"nodes": config_nodes})


def _chi_square_p_value(counts: np.ndarray, table: np.ndarray) -> float:
    """Pooled Pearson chi-square of counts (rows, states) against probabilities (rows, states).

    Rows never visited carry no information and are dropped; states with probability 0 in a row
    must have count 0 (checked separately) and are dropped from the statistic and its degrees of
    freedom.
    """
    seen = counts.sum(axis=1) > 0
    counts, table = counts[seen], table[seen]
    possible = table > 0
    assert np.all(counts[~possible] == 0), "a state of probability 0 was drawn"
    expected = counts.sum(axis=1, keepdims=True) * table
    statistic = np.sum((counts - expected)[possible] ** 2 / expected[possible])
    degrees = int(np.sum(possible.sum(axis=1) - 1))
    return stats.chi2.sf(statistic, df=degrees)


def _previous(values: np.ndarray) -> np.ndarray:
    """values (batch, length) shifted right by one step, with the initial previous value 0."""
    return np.concatenate([np.zeros((values.shape[0], 1), values.dtype), values[:, :-1]], axis=1)


def _transition_counts(graph, name, tokens, latents) -> np.ndarray:
    """Counts (input rows, states) of a node's value against its inputs, per DESIGN §2 time semantics."""
    values = {**latents, graph.observed: tokens}
    inputs = [_previous(values[p]) if p in (name, graph.observed) else values[p] for p in graph.inputs(name)]
    counts = np.zeros(graph.kernel_shape(name))
    np.add.at(counts, (*[np.asarray(v, np.int64) for v in inputs], np.asarray(values[name], np.int64)), 1)
    return counts.reshape(-1, graph.node(name).states)


def test_threefry_matches_jax():
    key = jnp.array([0x12345678, 0x9ABCDEF0], jnp.uint32)
    high = jnp.arange(50, dtype=jnp.uint32) * np.uint32(2654435761)
    low = jnp.arange(50, dtype=jnp.uint32) ^ np.uint32(0xFFFF0000)
    expected = threefry_2x32(key, jnp.concatenate([high, low]))
    np.testing.assert_array_equal(np.concatenate(threefry.threefry_2x32((key[0], key[1]), high, low)), expected)


def test_thresholds_resolve_probabilities_and_keep_zeros():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.full(40, 0.05), size=200).astype(np.float32)
    probabilities[:, ::3] = 0  # exact zeros at the ends and in the middle
    probabilities[0] = 0
    probabilities[0, 7] = 1  # a single certain state
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    thresholds = np.asarray(tables.cumulative_thresholds(jnp.asarray(probabilities)), np.float64)
    assert np.all(np.diff(thresholds, axis=1) >= 0)
    # Random words are clamped to [0, 2**32 - 2], so the SATURATED threshold 2**32 - 1 closes the range.
    edges = np.concatenate([np.zeros((200, 1)), thresholds, np.full((200, 1), 2.0**32 - 1)], axis=1)
    drawn = np.diff(edges, axis=1) / 2.0**32
    assert np.all(drawn[probabilities == 0] == 0)
    # Error bound per boundary between states: 2**-32 from flooring, plus float32 rounding of the
    # head (below the mode) or tail (above it) sum of <= 40 terms and of the normalising total,
    # 2 * 40 * 2**-24 relative to the smaller of the two sums. A state's error is that of its two
    # boundaries, plus 2**-32 for the clamped top word.
    cumulative = np.cumsum(probabilities.astype(np.float64), axis=1)[:, :-1]
    boundary = 2.0**-32 + 2 * 40 * 2.0**-24 * np.minimum(cumulative, 1 - cumulative).clip(min=0)
    padded = np.pad(boundary, ((0, 0), (1, 1)))
    bound = padded[:, :-1] + padded[:, 1:] + 2.0**-32
    assert np.all(np.abs(drawn - probabilities.astype(np.float64)) <= bound)


def _experiment1():
    return GraphSpec.from_config(experiment1_graph_config(2, 3, 4, alpha_x=0.7, alpha_z=0.7))


def test_transition_frequencies_experiment1_shape():
    graph = _experiment1()
    kernels = sample_kernels(jax.random.key(1), graph)
    tokens, latents = sampler.sample_tokens(jax.random.key(2), graph, kernels, 256, 64, return_latents=True)
    tokens, latents = np.asarray(tokens), {k: np.asarray(v) for k, v in latents.items()}
    for name in ("Z1", "Z2", "X"):
        table = np.asarray(conditional_table(graph, kernels, name), np.float64).reshape(-1, graph.node(name).states)
        assert _chi_square_p_value(_transition_counts(graph, name, tokens, latents), table) > FALSE_FAILURE_RATE


@pytest.mark.slow  # ~3 compilations; CPU compile time dominates
def test_transition_frequencies_same_step_chain_with_product_kernels():
    # Z1 -> Z2 at the same step, X[t-1] -> Z1, X reads Z2 only; all product kernels.
    graph = _graph([
        {"name": "Z1", "states": 3, "alpha": 0.8, "parents": ["X"], "kernel": "product"},
        {"name": "Z2", "states": 4, "alpha": 0.8, "parents": ["Z1"], "kernel": "product"},
        {"name": "X", "states": 5, "alpha": 0.8, "parents": ["Z2"], "kernel": "product"},
    ])
    kernels = sample_kernels(jax.random.key(3), graph)
    tokens, latents = sampler.sample_tokens(jax.random.key(4), graph, kernels, 256, 64, return_latents=True)
    tokens, latents = np.asarray(tokens), {k: np.asarray(v) for k, v in latents.items()}
    for name in ("Z1", "Z2", "X"):
        table = np.asarray(conditional_table(graph, kernels, name), np.float64).reshape(-1, graph.node(name).states)
        assert _chi_square_p_value(_transition_counts(graph, name, tokens, latents), table) > FALSE_FAILURE_RATE


def test_matches_reference_sampler_in_distribution():
    graph = _experiment1()
    kernels = sample_kernels(jax.random.key(5), graph)
    tables = {name: np.asarray(table, np.float64) for name, table in conditional_tables(graph, kernels).items()}
    batch, length = 4000, 6
    ours = np.asarray(sampler.sample_tokens(jax.random.key(6), graph, kernels, batch, length)).astype(np.int64)
    theirs = numpy_sampler.sample(np.random.default_rng(7), graph, tables, batch, length)
    vocab = graph.vocab_size
    # Last token (unigram) and last two tokens (bigram): one independent draw per sequence.
    for ours_cells, theirs_cells, cells in (
        (ours[:, -1], theirs[:, -1], vocab),
        (ours[:, -2] * vocab + ours[:, -1], theirs[:, -2] * vocab + theirs[:, -1], vocab**2),
    ):
        table = np.stack([np.bincount(ours_cells, minlength=cells), np.bincount(theirs_cells, minlength=cells)])
        table = table[:, table.sum(axis=0) > 0]
        assert stats.chi2_contingency(table).pvalue > FALSE_FAILURE_RATE


def test_latents_are_consistent_with_tokens_for_tiny_alpha():
    # alpha 1e-3: most probabilities are exactly 0 in float32, so an impossible value would show.
    graph = GraphSpec.from_config(experiment1_graph_config(2, 4, 32, alpha_x=1e-3, alpha_z=1e-3))
    kernels = sample_kernels(jax.random.key(8), graph)
    tokens, latents = sampler.sample_tokens(jax.random.key(9), graph, kernels, 64, 256, return_latents=True)
    tokens, latents = np.asarray(tokens), {k: np.asarray(v) for k, v in latents.items()}
    for name in ("Z1", "Z2", "X"):
        table = np.asarray(conditional_table(graph, kernels, name)).reshape(-1, graph.node(name).states)
        counts = _transition_counts(graph, name, tokens, latents)
        assert np.all(counts[table == 0] == 0), f"{name} took a value of probability 0"


@pytest.mark.slow  # ~3 compilations; CPU compile time dominates
def test_dead_and_slow_modes():
    graph = _graph([
        {"name": "Z1", "states": 4, "alpha": 0.1, "parents": ["X"], "mode": "slow"},
        {"name": "X", "states": 6, "alpha": 0.1, "parents": ["Z1"], "mode": "dead"},
    ])
    kernels = sample_kernels(jax.random.key(10), graph)
    tokens, latents = sampler.sample_tokens(jax.random.key(11), graph, kernels, 64, 64, return_latents=True)
    tokens, z = np.asarray(tokens), np.asarray(latents["Z1"])
    # dead: every X row has its largest entry in column 0, so token 0 is the most frequent overall.
    token_counts = np.bincount(tokens.ravel(), minlength=6)
    assert token_counts[0] == token_counts.max()
    # slow: each Z row's largest entry is its own previous value; with alpha 0.1 over 4 states the
    # expected largest entry is ~0.8, so staying must far exceed the 1/4 of a uniform chain.
    assert np.mean(z[:, 1:] == z[:, :-1]) > 0.5


@pytest.mark.slow  # ~3 compilations; CPU compile time dominates
def test_context_kernels_differ_between_sequences():
    # Z is stuck at 0 (dead, alpha 1e-3: column 0 has ~all the mass), so each sequence's tokens are
    # i.i.d. from one row of X's kernel: its own row for context, a shared row otherwise.
    def graph(mode):
        return _graph([
            {"name": "Z", "states": 2, "alpha": 1e-3, "parents": [], "mode": "dead"},
            {"name": "X", "states": 8, "alpha": 0.3, "parents": ["Z"], "mode": mode},
        ])

    p_values = {}
    for mode in ("default", "context"):
        kernels = sample_kernels(jax.random.key(12), graph(mode))
        tokens, latents = sampler.sample_tokens(jax.random.key(13), graph(mode), kernels, 8, 256, return_latents=True)
        assert np.all(np.asarray(latents["Z"]) == 0)
        counts = np.stack([np.bincount(row, minlength=8) for row in np.asarray(tokens)])
        p_values[mode] = stats.chi2_contingency(counts[:, counts.sum(axis=0) > 0]).pvalue
    assert p_values["default"] > FALSE_FAILURE_RATE  # homogeneous across sequences
    assert p_values["context"] < FALSE_FAILURE_RATE  # 8 independent Dirichlet(0.3) rows differ


def test_determinism_prefix_and_dtypes():
    graph = _experiment1()
    kernels = sample_kernels(jax.random.key(14), graph)
    first = sampler.sample_tokens(jax.random.key(15), graph, kernels, 6, 10)
    assert first.dtype == jnp.uint8 and first.shape == (6, 10)
    np.testing.assert_array_equal(first, sampler.sample_tokens(jax.random.key(15), graph, kernels, 6, 10))
    assert not np.array_equal(first, sampler.sample_tokens(jax.random.key(16), graph, kernels, 6, 10))
    # Bits depend on (key, sequence, step, node) only: fewer rows or steps give a prefix.
    np.testing.assert_array_equal(first[:3, :7], sampler.sample_tokens(jax.random.key(15), graph, kernels, 3, 7))
    # A legacy uint32 key and the typed key wrapping the same data give the same batch.
    legacy = jax.random.PRNGKey(15)
    np.testing.assert_array_equal(sampler.sample_tokens(legacy, graph, kernels, 6, 10),
                                  sampler.sample_tokens(jax.random.wrap_key_data(legacy), graph, kernels, 6, 10))
    wide = GraphSpec.from_config(experiment1_graph_config(1, 2, 300, alpha_x=0.5, alpha_z=0.5))
    tokens = sampler.sample_tokens(jax.random.key(17), wide, sample_kernels(jax.random.key(18), wide), 4, 8)
    assert tokens.dtype == jnp.int32 and int(tokens.max()) < 300


def test_sharded_equals_unsharded_bit_for_bit():
    assert jax.device_count() == 8
    graph = _graph([
        {"name": "Z1", "states": 3, "alpha": 0.5, "parents": ["X"], "mode": "context"},
        {"name": "Z2", "states": 2, "alpha": 0.5, "parents": ["Z1"], "kernel": "product"},
        {"name": "X", "states": 5, "alpha": 0.5, "parents": ["Z1", "Z2"]},
    ])
    kernels = sample_kernels(jax.random.key(19), graph)
    sharding = parallel.batch_sharded(parallel.data_parallel_mesh())
    plain = sampler.sample_tokens(jax.random.key(20), graph, kernels, 16, 12, return_latents=True)
    sharded = sampler.sample_tokens(jax.random.key(20), graph, kernels, 16, 12, return_latents=True, sharding=sharding)
    assert sharded[0].sharding.is_equivalent_to(sharding, 2)
    np.testing.assert_array_equal(np.asarray(sharded[0]), np.asarray(plain[0]))
    for name in plain[1]:
        np.testing.assert_array_equal(np.asarray(sharded[1][name]), np.asarray(plain[1][name]))
    # Under an outer jit (the training step's usage) the result is the same.
    inside = jax.jit(lambda key: sampler.sample_tokens(key, graph, kernels, 16, 12, sharding=sharding))
    np.testing.assert_array_equal(np.asarray(inside(jax.random.key(20))), np.asarray(plain[0]))


def test_errors_name_the_field():
    graph = _experiment1()
    kernels = sample_kernels(jax.random.key(0), graph)
    sharding = parallel.batch_sharded(parallel.data_parallel_mesh())
    with pytest.raises(ValueError, match="batch_size=12 is not divisible by the 8 devices"):
        sampler.sample_tokens(jax.random.key(0), graph, kernels, 12, 4, sharding=sharding)
    with pytest.raises(ValueError, match="length must be a positive integer"):
        sampler.sample_tokens(jax.random.key(0), graph, kernels, 8, 0)


def test_single_hidden_node_graph_compiles_and_follows_its_table():
    # Regression: an intermediate sampler's compile ran away on a graph with one hidden node.
    graph = GraphSpec.from_config(experiment1_graph_config(1, 2, 5, 0.5, 0.5))
    kernels = sample_kernels(jax.random.key(0), graph)
    tokens, latents = sampler.sample_tokens(jax.random.key(1), graph, kernels, 8, 16, return_latents=True)
    assert tokens.shape == (8, 16) and tokens.dtype == jnp.uint8
    emission = np.asarray(conditional_table(graph, kernels, "X"))
    assert np.all(emission[np.asarray(latents["Z1"]), np.asarray(tokens)] > 0)


def test_wide_vocabulary_bisects_and_follows_its_table():
    # Above ROW_GATHER_MAX_STATES states a draw bisects its threshold row instead of comparing all of it.
    graph = GraphSpec.from_config(experiment1_graph_config(1, 2, 300, alpha_x=0.5, alpha_z=0.5))
    assert graph.vocab_size > tables.ROW_GATHER_MAX_STATES
    kernels = sample_kernels(jax.random.key(21), graph)
    tokens, latents = sampler.sample_tokens(jax.random.key(22), graph, kernels, 512, 32, return_latents=True)
    tokens, latents = np.asarray(tokens), {k: np.asarray(v) for k, v in latents.items()}
    for name in ("Z1", "X"):
        table = np.asarray(conditional_table(graph, kernels, name), np.float64).reshape(-1, graph.node(name).states)
        assert _chi_square_p_value(_transition_counts(graph, name, tokens, latents), table) > FALSE_FAILURE_RATE


def test_precomputed_tables_give_the_same_batch():
    graph = _graph([
        {"name": "Z1", "states": 3, "alpha": 0.5, "parents": ["X"], "mode": "context"},
        {"name": "Z2", "states": 2, "alpha": 0.5, "parents": ["Z1"], "kernel": "product"},
        {"name": "X", "states": 5, "alpha": 0.5, "parents": ["Z1", "Z2"]},
    ])
    kernels = sample_kernels(jax.random.key(23), graph)
    precomputed = tables.sampling_tables(graph, kernels)
    assert set(precomputed.thresholds) == {"Z2", "X"}  # context nodes are redrawn per sequence from the key
    np.testing.assert_array_equal(np.asarray(sampler.sample_tokens(jax.random.key(24), graph, precomputed, 8, 12)),
                                  np.asarray(sampler.sample_tokens(jax.random.key(24), graph, kernels, 8, 12)))


def test_graphs_differing_only_in_non_context_alphas_share_one_compilation():
    from gssm_jax.sampling.sampler import _sample_jitted

    def graph(alpha_x, alpha_context):
        return _graph([
            {"name": "Z1", "states": 2, "alpha": 0.3, "parents": ["X"]},
            {"name": "Z2", "states": 2, "alpha": alpha_context, "parents": [], "mode": "context"},
            {"name": "X", "states": 3, "alpha": alpha_x, "parents": ["Z1", "Z2"]},
        ])

    first = graph(0.1, 0.5)
    assert first.structure == graph(0.7, 0.5).structure != graph(0.1, 0.6).structure  # context alpha is traced in
    before = _sample_jitted._cache_size()
    for alpha_x in (0.1, 0.7, 2.0):
        g = graph(alpha_x, 0.5)
        sampler.sample_tokens(jax.random.key(0), g, sample_kernels(jax.random.key(1), g), 4, 5)
    assert _sample_jitted._cache_size() == before + 1


# ---- the initial state ------------------------------------------------------------------------------------


def test_stationary_batches_are_the_tail_of_a_longer_zero_state_batch():
    """Burn-in steps use the random words of steps 0..B-1, so the emitted tokens and latents are exactly steps
    B.. of the zero-state chain; sharded or not."""
    graph = _graph([{"name": "Z1", "states": 3, "alpha": 0.3, "parents": ["X"]},
                    {"name": "Z2", "states": 2, "alpha": 0.3, "parents": ["Z1"]},
                    {"name": "X", "states": 4, "alpha": 0.3, "parents": ["Z2", "Z1"]}])
    kernels = sample_kernels(jax.random.key(30), graph)
    sharding = parallel.batch_sharded(parallel.data_parallel_mesh())
    tokens, latents = sampler.sample_tokens(jax.random.key(31), graph, kernels, 16, 10, return_latents=True,
                                            initial_state="stationary", burn_in=7, sharding=sharding)
    long_tokens, long_latents = sampler.sample_tokens(jax.random.key(31), graph, kernels, 16, 17, return_latents=True)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(long_tokens)[:, 7:])
    for name in graph.hidden_order:
        np.testing.assert_array_equal(np.asarray(latents[name]), np.asarray(long_latents[name])[:, 7:])
    zeros = sampler.sample_tokens(jax.random.key(31), graph, kernels, 16, 10)
    np.testing.assert_array_equal(np.asarray(sampler.sample_tokens(jax.random.key(31), graph, kernels, 16, 10,
                                                                   initial_state="stationary", burn_in=0)),
                                  np.asarray(zeros))
    # Under "zeros" burn_in is ignored.
    np.testing.assert_array_equal(np.asarray(sampler.sample_tokens(jax.random.key(31), graph, kernels, 16, 10,
                                                                   burn_in=5)), np.asarray(zeros))


def test_first_latents_follow_the_exact_burn_in_distribution():
    """The hidden values of the first emitted step, over many sequences, against the dense Markov chain on (hidden,
    X) after the burn-in (`numpy_forward.dense_burn_in_prior`, independent of the sampler): Pearson's chi-square
    over the S joint values at FALSE_FAILURE_RATE; the zero state's first step is rejected by the same test."""
    from gssm_jax.inference import numpy_forward  # noqa: PLC0415

    graph = GraphSpec.from_config(experiment1_graph_config(2, 3, 4, 0.3, 0.3))
    kernels = sample_kernels(jax.random.key(32), graph)
    tables64 = {name: np.asarray(table, np.float64) for name, table in conditional_tables(graph, kernels).items()}
    batch, burn_in = 20_000, 12
    _, latents = sampler.sample_tokens(jax.random.key(33), graph, kernels, batch, 1, return_latents=True,
                                       initial_state="stationary", burn_in=burn_in)
    sizes = [graph.node(name).states for name in graph.hidden_order]
    joint = np.ravel_multi_index([np.asarray(latents[name])[:, 0] for name in graph.hidden_order], sizes)
    counts = np.bincount(joint, minlength=int(np.prod(sizes)))[None]
    prior = numpy_forward.dense_burn_in_prior(graph, tables64, burn_in)
    assert _chi_square_p_value(counts, (prior / prior.sum())[None]) > FALSE_FAILURE_RATE
    first_step = numpy_forward.dense_burn_in_prior(graph, tables64, 0)
    assert _chi_square_p_value(counts, (first_step / first_step.sum())[None]) < FALSE_FAILURE_RATE


def test_initial_state_errors_name_the_field():
    graph = GraphSpec.from_config(experiment1_graph_config(2, 2, 3, 0.5, 0.5))
    kernels = sample_kernels(jax.random.key(0), graph)
    with pytest.raises(ValueError, match="config.data.initial_state is 'random'; use one of zeros, stationary"):
        sampler.sample_tokens(jax.random.key(0), graph, kernels, 2, 4, initial_state="random")
    with pytest.raises(ValueError, match=r"config.data.burn_in is 2.5; use an integer >= 0"):
        sampler.sample_tokens(jax.random.key(0), graph, kernels, 2, 4, initial_state="stationary", burn_in=2.5)
    with pytest.raises(ValueError, match="after 4294967295 burn-in steps"):
        sampler.sample_tokens(jax.random.key(0), graph, kernels, 2, 4, initial_state="stationary",
                              burn_in=2**32 - 1)

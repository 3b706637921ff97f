"""The exact forward algorithm against brute-force enumeration of latent paths and a dense forward pass."""

import itertools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import gammaln

from gssm_jax.gssm.families import FAMILIES
from gssm_jax.gssm.graph import GraphSpec, experiment1_graph_config
from gssm_jax.gssm.kernels import conditional_tables, sample_kernels
from gssm_jax.inference import api, chains, numpy_forward
from gssm_jax.sampling import numpy_sampler, sampler

FLOAT32_EPS = float(np.finfo(np.float32).eps)
FLOAT64_EPS = float(np.finfo(np.float64).eps)


def _chain_graph():  # hidden -> hidden same-step chain: A[t] reads X[t-1], B[t] reads A[t], X reads B
    return {"nodes": [
        {"name": "A", "states": 2, "alpha": 0.5, "parents": ["X"]},
        {"name": "B", "states": 3, "alpha": 0.5, "parents": ["A"]},
        {"name": "X", "states": 3, "alpha": 0.5, "parents": ["B"]},
    ]}


def _two_parent_graph():  # B reads A[t] and X[t-1]; X reads both hidden nodes (listed out of order)
    return {"nodes": [
        {"name": "B", "states": 2, "alpha": 0.5, "parents": ["A", "X"]},
        {"name": "A", "states": 2, "alpha": 0.3, "parents": ["X"]},
        {"name": "X", "states": 3, "alpha": 0.5, "parents": ["B", "A"]},
    ]}


def _modes_graph():  # slow and dead modes, a product kernel
    config = experiment1_graph_config(2, 2, 3, 0.5, 0.5)
    config["nodes"][0]["mode"] = "slow"
    config["nodes"][1].update(mode="dead", kernel="product")
    config["nodes"][2]["mode"] = "dead"
    return config


TINY_GRAPHS = {
    "feedback": experiment1_graph_config(2, 2, 3, 0.5, 0.5),
    "feedback_product": experiment1_graph_config(2, 2, 3, 0.5, 0.5, kernel="product"),
    "chain": _chain_graph(),
    "two_parents": _two_parent_graph(),
    "dead_slow": _modes_graph(),
}


def brute_force_prefix_log_probs(graph, tables, tokens):
    """log p(x_0..x_t) `(batch, length)`, float64, summing the probability of every latent path."""
    tables = {name: np.asarray(table, np.float64) for name, table in tables.items()}
    hidden = graph.hidden_order
    sizes = [graph.node(name).states for name in hidden]
    result = []
    for sequence in np.asarray(tokens):
        length = len(sequence)
        prefix = np.zeros(length)
        for flat_path in itertools.product(*[range(size) for size in sizes] * length):
            path = np.reshape(flat_path, (length, len(hidden)))
            probability = 1.0
            previous = {name: 0 for name in (*hidden, graph.observed)}
            for t in range(length):
                current = {}
                for i, name in enumerate(hidden):
                    current[name] = path[t, i]
                    index = tuple(previous[p] if p in (name, graph.observed) else current[p]
                                  for p in graph.inputs(name))
                    probability *= tables[name][(*index, current[name])]
                index = tuple(current[p] for p in graph.inputs(graph.observed))
                probability *= tables[graph.observed][(*index, sequence[t])]
                current[graph.observed] = sequence[t]
                previous = current
                prefix[t] += probability
        completions = [math.prod(sizes) ** (length - 1 - t) for t in range(length)]  # later latents summed too
        result.append(np.log(prefix / completions))
    return np.array(result)


def _tiny_case(name, seed=0, batch=3, length=4):
    graph = GraphSpec.from_config(TINY_GRAPHS[name])
    kernels = sample_kernels(jax.random.key(seed), graph)
    tables = {n: np.asarray(t, np.float64) for n, t in conditional_tables(graph, kernels).items()}
    tokens = numpy_sampler.sample(np.random.default_rng(seed), graph, tables, batch, length)
    return graph, kernels, tables, tokens


@pytest.mark.parametrize("implementation", ["cpu", "batched"])
@pytest.mark.parametrize("name", sorted(TINY_GRAPHS))
def test_token_losses_match_brute_force_in_float64(name, implementation):
    """Both implementations, forced on the CPU, so that the accelerator path compiles and runs in CI."""
    graph, kernels, _, tokens = _tiny_case(name)
    with jax.enable_x64(True):
        kernels64 = jax.tree.map(lambda table: jnp.asarray(table, jnp.float64), kernels)
        # Product kernels are renormalised in float64 here, so the reference uses the same tables.
        tables64 = {n: np.asarray(t) for n, t in conditional_tables(graph, kernels64).items()}
        losses = np.asarray(api.token_losses(graph, kernels64, tokens, implementation=implementation))
    expected = -np.diff(brute_force_prefix_log_probs(graph, tables64, tokens), axis=1, prepend=0.0)
    assert losses.dtype == np.float64
    # Each step rounds O(S * sum of states) products and a normalisation: 100 * S * T eps is generous
    # for rounding yet ~1e9 times smaller than any modelling error (a wrong table entry moves a loss by >1e-3).
    np.testing.assert_allclose(losses, expected, rtol=0, atol=100 * graph.num_latent_states * tokens.size * FLOAT64_EPS)


@pytest.mark.parametrize("name", ["feedback", "two_parents"])  # every topology runs in float64 above
def test_log_likelihood_matches_brute_force_in_float32(name):
    graph, kernels, tables, tokens = _tiny_case(name, seed=1)
    expected = brute_force_prefix_log_probs(graph, tables, tokens)[:, -1]
    # float32: each token's loss carries a few eps of relative error in the table products and the
    # normalisation (<= 32 eps with margin); the sequence sum adds them over T tokens.
    bound = 32 * FLOAT32_EPS * tokens.shape[1] * max(1.0, np.max(np.abs(expected)))
    np.testing.assert_allclose(np.asarray(api.log_likelihood(graph, kernels, tokens)), expected, atol=bound)
    np.testing.assert_allclose(np.asarray(api.negative_log_likelihood(graph, kernels, tokens)), -expected,
                               atol=bound)


def test_numpy_references_match_brute_force():
    """The benchmark's float64 references are themselves checked against enumeration."""
    graph, _, tables, tokens = _tiny_case("two_parents", seed=2)
    expected = -np.diff(brute_force_prefix_log_probs(graph, tables, tokens), axis=1, prepend=0.0)
    np.testing.assert_allclose(numpy_forward.factorised_losses(graph, tables, tokens), expected, atol=1e-12)
    np.testing.assert_allclose(numpy_forward.dense_losses(graph, tables, tokens), expected, atol=1e-12)


def test_matches_dense_forward_pass_on_a_small_graph():
    config = {"nodes": [
        {"name": "Z1", "states": 3, "alpha": 0.2, "parents": ["X"]},
        {"name": "Z2", "states": 3, "alpha": 0.2, "parents": ["Z1", "X"], "kernel": "product"},
        {"name": "Z3", "states": 3, "alpha": 0.05, "parents": ["X"], "mode": "slow"},
        {"name": "X", "states": 5, "alpha": 0.1, "parents": ["Z3", "Z2", "Z1"]},
    ]}
    graph = GraphSpec.from_config(config)
    kernels = sample_kernels(jax.random.key(3), graph)
    tables = {n: np.asarray(t, np.float64) for n, t in conditional_tables(graph, kernels).items()}
    tokens = numpy_sampler.sample(np.random.default_rng(3), graph, tables, 4, 32)
    expected = numpy_forward.dense_losses(graph, tables, tokens)
    losses = np.asarray(api.token_losses(graph, kernels, tokens))
    # float32 per-token rounding: the belief after normalisation has O(eps log S) relative error, which
    # the next loss inherits; 64 eps per token is a generous multiple.
    np.testing.assert_allclose(losses, expected, atol=64 * FLOAT32_EPS * max(1.0, expected.max()))



def test_tiny_graphs_cover_the_chain_pass_and_the_general_pass():
    """The brute-force tests above run the sequences-minor chain pass and the general pass; the
    Kronecker-block pass, taken by large chain graphs, is checked against the dense pass below."""
    passes = {name: api._pass(GraphSpec.from_config(config), frozenset()) for name, config in TINY_GRAPHS.items()}
    assert passes == {"feedback": "minor", "feedback_product": "minor", "dead_slow": "minor", "chain": "general",
                      "two_parents": "general"}
    eight_by_four = GraphSpec.from_config(experiment1_graph_config(8, 4, 64, 0.1, 0.1))
    assert api._pass(eight_by_four, frozenset(), "cpu", per_device=31) == "blocks"
    assert api._pass(eight_by_four, frozenset(), "cpu", per_device=32) == "minor"
    assert api._pass(eight_by_four, frozenset(), "batched", per_device=32) == "batched_blocks"


@pytest.mark.parametrize("chain_pass", [chains.forward_minor, chains.forward_blocks,
                                        chains.forward_blocks_batched])
def test_independent_chain_passes_match_dense_forward_pass(chain_pass):
    """Uneven state counts (padded to 4 by forward_minor; blocks (Z1, Z2) and (Z3) in forward_blocks), a
    node without X, X reading a subset of the hidden nodes."""
    config = {"nodes": [
        {"name": "Z1", "states": 3, "alpha": 0.2, "parents": ["X"]},
        {"name": "Z2", "states": 4, "alpha": 0.2, "parents": ["X"], "kernel": "product"},
        {"name": "Z3", "states": 2, "alpha": 0.3, "parents": []},
        {"name": "X", "states": 5, "alpha": 0.1, "parents": ["Z3", "Z1"]},
    ]}
    graph = GraphSpec.from_config(config)
    assert chains.independent_chains(graph) and len(chains.blocks(graph)) == 2
    kernels = sample_kernels(jax.random.key(4), graph)
    tables = {n: np.asarray(t, np.float64) for n, t in conditional_tables(graph, kernels).items()}
    tokens = numpy_sampler.sample(np.random.default_rng(4), graph, tables, 5, 32)
    expected = numpy_forward.dense_losses(graph, tables, tokens)
    run = jax.jit(chain_pass, static_argnums=0)
    with jax.enable_x64(True):
        kernels64 = jax.tree.map(lambda table: jnp.asarray(table, jnp.float64), kernels)
        tables64 = conditional_tables(graph, kernels64)
        expected64 = numpy_forward.dense_losses(graph, {n: np.asarray(t) for n, t in tables64.items()}, tokens)
        losses64 = np.asarray(run(graph, tables64, jnp.asarray(tokens, jnp.int32)))
    # float64: as test_token_losses_match_brute_force_in_float64, 100 * S * T eps bounds the rounding.
    np.testing.assert_allclose(losses64, expected64, rtol=0, atol=100 * graph.num_latent_states * tokens.size
                               * FLOAT64_EPS)
    losses = np.asarray(run(graph, conditional_tables(graph, kernels), jnp.asarray(tokens, jnp.int32)))
    # float32: as test_matches_dense_forward_pass_on_a_small_graph, 64 eps per token.
    np.testing.assert_allclose(losses, expected, atol=64 * FLOAT32_EPS * max(1.0, expected.max()))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_both_implementations_match_the_float64_reference_on_every_family(family):
    """Each Experiment 1 family at its real size (8x4/V64 included), a few short sequences."""
    graph = GraphSpec.from_config(FAMILIES[family].config(0.1, 0.1))
    kernels = sample_kernels(jax.random.key(5), graph)
    tables = {n: np.asarray(t, np.float64) for n, t in conditional_tables(graph, kernels).items()}
    tokens = numpy_sampler.sample(np.random.default_rng(5), graph, tables, 3, 6)
    expected = numpy_forward.factorised_losses(graph, tables, tokens)
    for implementation in ("cpu", "batched"):
        losses = np.asarray(api.token_losses(graph, kernels, tokens, implementation=implementation))
        # float32: as test_matches_dense_forward_pass_on_a_small_graph, 64 eps per token.
        np.testing.assert_allclose(losses, expected, atol=64 * FLOAT32_EPS * max(1.0, expected.max()),
                                   err_msg=implementation)


def test_implementation_is_chosen_by_backend_and_checked():
    assert api.resolve_implementation("auto") == ("cpu" if jax.default_backend() == "cpu" else "batched")
    assert api.resolve_implementation("batched") == "batched"
    graph, kernels, _, tokens = _tiny_case("feedback")
    with pytest.raises(ValueError, match="implementation is 'gpu'; use one of auto, cpu, batched"):
        api.token_losses(graph, kernels, tokens, implementation="gpu")
    # Inside the caller's jit the per-core pieces are skipped; the losses are the same.
    traced = jax.jit(lambda tokens: api.token_losses(graph, kernels, tokens))(tokens)
    np.testing.assert_array_equal(np.asarray(traced), np.asarray(api.token_losses(graph, kernels, tokens)))


def test_large_graphs_take_the_minor_pass_in_fixed_chunks(monkeypatch):
    """As 8x4/V64 with >= 32 sequences per device, scaled down: fixed chunks, padded batch."""
    graph = GraphSpec.from_config(experiment1_graph_config(3, 3, 4, 0.3, 0.3))
    monkeypatch.setattr(api, "MINOR_MAX_STATES", 16)
    monkeypatch.setattr(api, "LARGE_MINOR_CHUNK", 4)
    per_device = -(-41 // jax.device_count())
    assert api._pass(graph, frozenset(), "cpu", per_device) == "minor" and per_device % 4
    kernels = sample_kernels(jax.random.key(6), graph)
    tables = {n: np.asarray(t, np.float64) for n, t in conditional_tables(graph, kernels).items()}
    tokens = numpy_sampler.sample(np.random.default_rng(6), graph, tables, 41, 5)
    expected = numpy_forward.factorised_losses(graph, tables, tokens)
    losses = np.asarray(api.token_losses(graph, kernels, tokens, implementation="cpu"))
    # float32: as test_matches_dense_forward_pass_on_a_small_graph, 64 eps per token.
    np.testing.assert_allclose(losses, expected, atol=64 * FLOAT32_EPS * max(1.0, expected.max()))


def test_pieces_per_core_give_the_same_losses(monkeypatch):
    """The thread-pool split (taken on a single CPU device; the suite has 8) with a padded last piece."""
    graph, kernels, _, tokens = _tiny_case("two_parents", batch=5, length=6)
    whole = np.asarray(api.token_losses(graph, kernels, tokens, implementation="cpu"))
    assert api._cpu_parts(5, "cpu") == 1 and jax.local_device_count() > 1
    monkeypatch.setattr(jax, "local_device_count", lambda: 1)
    assert api._cpu_parts(5, "cpu") == min(5, len(os.sched_getaffinity(0)))
    assert api._cpu_parts(5, "batched") == 1
    monkeypatch.setattr(api, "_cpu_parts", lambda batch, implementation: 3)
    np.testing.assert_array_equal(np.asarray(api.token_losses(graph, kernels, tokens)), whole)


def test_token_dtypes_give_the_same_losses():
    graph, kernels, _, tokens = _tiny_case("feedback", batch=4, length=6)
    results = [np.asarray(api.token_losses(graph, kernels, tokens.astype(dtype)))
               for dtype in (np.uint8, np.int32, np.int64)]
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


@pytest.mark.slow
def test_token_losses_sum_to_the_negative_log_likelihood():
    graph = GraphSpec.from_config(experiment1_graph_config(3, 4, 16, 0.1, 0.1))
    kernels = sample_kernels(jax.random.key(4), graph)
    tokens = sampler.sample_tokens(jax.random.key(5), graph, kernels, 16, 512)
    per_token = np.asarray(api.token_losses(graph, kernels, tokens), np.float64)
    sequence = np.asarray(api.negative_log_likelihood(graph, kernels, tokens), np.float64)
    # Summing T float32 values by a balanced tree: error <= eps * log2(T) * sum of |values|.
    bound = FLOAT32_EPS * math.log2(tokens.shape[1]) * np.abs(per_token).sum(axis=1)
    assert np.all(np.abs(per_token.sum(axis=1) - sequence) <= bound)


def test_entropy_rate_lies_between_zero_and_log_vocab():
    vocab = 8
    graph = GraphSpec.from_config(experiment1_graph_config(2, 3, vocab, 0.5, 0.5))
    kernels = sample_kernels(jax.random.key(6), graph)
    tokens = sampler.sample_tokens(jax.random.key(7), graph, kernels, 64, 128)
    losses = np.asarray(api.token_losses(graph, kernels, tokens))
    assert np.all(losses >= -8 * FLOAT32_EPS)  # -log p with p <= 1, up to float32 rounding of the mass
    rate = api.entropy_rate(graph, kernels, tokens)
    expected_mean = losses.mean(axis=1)
    np.testing.assert_allclose(float(rate.nats_per_token), expected_mean.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(rate.standard_error), expected_mean.std(ddof=1) / 8, rtol=1e-4)
    # The true rate is < log V; the sample mean exceeds it by 4 standard errors with probability < 1e-4.
    assert 0 < float(rate.nats_per_token) < math.log(vocab) + 4 * float(rate.standard_error)


def test_deterministic_graph_has_zero_loss():
    """Hand-built 0/1 tables: Z[t] = (Z[t-1] + X[t-1] + 1) mod 2, X[t] = Z[t]: every token is certain."""
    graph = GraphSpec.from_config({"nodes": [
        {"name": "Z", "states": 2, "alpha": 1.0, "parents": ["X"]},
        {"name": "X", "states": 2, "alpha": 1.0, "parents": ["Z"]},
    ]})
    step = np.zeros((2, 2, 2), np.float32)
    for previous, token in itertools.product(range(2), range(2)):
        step[previous, token, (previous + token + 1) % 2] = 1.0
    kernels = {"Z": jnp.asarray(step), "X": jnp.eye(2, dtype=jnp.float32)}
    tokens = numpy_sampler.sample(np.random.default_rng(8), graph, {"Z": step, "X": np.eye(2)}, 4, 32)
    np.testing.assert_array_equal(np.asarray(api.token_losses(graph, kernels, tokens)), 0.0)
    flipped = tokens.copy()
    flipped[:, 5] = 1 - flipped[:, 5]
    losses = np.asarray(api.token_losses(graph, kernels, flipped))
    assert np.all(np.isposinf(losses[:, 5:])) and np.all(losses[:, :5] == 0)


def test_near_deterministic_dead_graph_has_near_zero_loss():
    config = experiment1_graph_config(2, 4, 16, 1e-4, 1e-4)
    for node in config["nodes"]:
        node["mode"] = "dead"
    graph = GraphSpec.from_config(config)
    kernels = sample_kernels(jax.random.key(9), graph)
    tokens = sampler.sample_tokens(jax.random.key(10), graph, kernels, 16, 128)
    rate = api.entropy_rate(graph, kernels, tokens)
    # Dirichlet(1e-4) rows put mass ~1e-3 off their largest entry, so a few 1e-3 nats/token at most.
    assert 0 <= float(rate.nats_per_token) < 0.02


def test_sampled_sequences_have_finite_likelihood():
    """Exact zeros in fullrank tables (alpha 1e-4) never make a sampled sequence impossible."""
    graph = GraphSpec.from_config(experiment1_graph_config(3, 4, 32, 1e-4, 1e-4))
    kernels = sample_kernels(jax.random.key(11), graph)
    assert float(jnp.mean(kernels["X"] == 0)) > 0.5  # the case under test: most entries exactly zero
    tables = {n: np.asarray(t, np.float64) for n, t in conditional_tables(graph, kernels).items()}
    batches = [np.asarray(sampler.sample_tokens(jax.random.key(12), graph, kernels, 16, 64)),
               numpy_sampler.sample(np.random.default_rng(12), graph, tables, 16, 64)]
    for tokens in batches:
        assert np.all(np.isfinite(np.asarray(api.log_likelihood(graph, kernels, tokens))))


def test_out_of_range_tokens_and_bad_shapes_raise():
    graph, kernels, _, tokens = _tiny_case("feedback")
    bad = tokens.astype(np.int32)
    bad[0, 2] = graph.vocab_size
    with pytest.raises(ValueError, match=rf"\[0, {graph.vocab_size}\).*\[0, {graph.vocab_size}\]"):
        api.token_losses(graph, kernels, bad)
    bad[0, 2] = -1
    with pytest.raises(ValueError, match=r"\[-1, "):
        api.entropy_rate(graph, kernels, jnp.asarray(bad))
    with pytest.raises(ValueError, match="integer array"):
        api.token_losses(graph, kernels, tokens[0])
    with pytest.raises(ValueError, match="integer array"):
        api.token_losses(graph, kernels, tokens.astype(np.float32))


# ---- context nodes ----------------------------------------------------------------------------------


def _context_graph():
    """Z (2 states, known kernel) reads X[t-1]; X's emission kernel is redrawn per sequence (context)."""
    return GraphSpec.from_config({"nodes": [
        {"name": "Z", "states": 2, "alpha": 0.5, "parents": ["X"]},
        {"name": "X", "states": 3, "alpha": 0.7, "parents": ["Z"], "mode": "context"},
    ]})


def exact_context_log_likelihood(graph, z_table, tokens):
    """log E_K[p(x | K)] over the Dirichlet prior of X's rows, by enumerating Z paths (float64).

    Given a path, X's likelihood is a product of Dirichlet moments, one per row z:
    E[prod_v p_v^n_v] = Gamma(V a) / Gamma(V a + N) * prod_v Gamma(a + n_v) / Gamma(a).
    """
    alpha, vocab = graph.node("X").alpha, graph.vocab_size
    results = []
    for sequence in tokens:
        total = 0.0
        for path in itertools.product(range(2), repeat=len(sequence)):
            probability, previous_z, previous_x = 1.0, 0, 0
            counts = np.zeros((2, vocab))
            for z, x in zip(path, sequence, strict=True):
                probability *= z_table[previous_z, previous_x, z]
                counts[z, x] += 1
                previous_z, previous_x = z, x
            log_moment = sum(gammaln(vocab * alpha) - gammaln(vocab * alpha + row.sum())
                             + np.sum(gammaln(alpha + row) - gammaln(alpha)) for row in counts)
            total += probability * math.exp(log_moment)
        results.append(math.log(total))
    return np.array(results)


def test_context_monte_carlo_agrees_with_the_exact_mixture():
    graph = _context_graph()
    kernels = sample_kernels(jax.random.key(13), graph)
    z_table = np.asarray(kernels["Z"], np.float64)
    tokens = np.array([[0, 1, 1, 2, 0, 0], [2, 2, 2, 2, 2, 2], [1, 0, 2, 1, 0, 1]])
    exact = exact_context_log_likelihood(graph, z_table, tokens)
    estimate = api.context_log_likelihood(graph, kernels, tokens, jax.random.key(14), num_draws=512)
    error = np.abs(np.asarray(estimate.log_likelihood) - exact)
    standard_error = np.asarray(estimate.standard_error)
    # Normal approximation of log-mean-exp: |error| <= 4 se fails with probability ~6e-5 per sequence;
    # Jensen's bias is about se^2 / 2, added to the bound.
    assert np.all(error <= 4 * standard_error + standard_error**2), (error, standard_error)
    np.testing.assert_allclose(np.asarray(estimate.token_losses).sum(axis=1), -np.asarray(estimate.log_likelihood),
                               rtol=1e-5)
    rate = api.entropy_rate(graph, kernels, tokens, key=jax.random.key(14), num_draws=512)
    np.testing.assert_allclose(float(rate.nats_per_token), np.mean(-np.asarray(estimate.log_likelihood) / 6),
                               rtol=1e-5)


def test_context_bias_estimate_matches_the_observed_bias():
    """With few draws the Monte Carlo log-likelihood is biased low; ContextEstimate.bias predicts by how much."""
    graph = _context_graph()
    kernels = sample_kernels(jax.random.key(13), graph)
    tokens = np.array([[0, 1, 1, 2, 0, 0], [2, 2, 2, 2, 2, 2], [1, 0, 2, 1, 0, 1]])
    exact = exact_context_log_likelihood(graph, np.asarray(kernels["Z"], np.float64), tokens)
    repeats, draws = 400, 4
    errors, biases = [], []
    for index in range(repeats):
        estimate = api.context_log_likelihood(graph, kernels, tokens, jax.random.key(100 + index), draws)
        errors.append(np.asarray(estimate.log_likelihood) - exact)
        biases.append(np.asarray(estimate.bias))
    errors, biases = np.array(errors), np.array(biases)  # (repeats, batch)
    observed, predicted = errors.mean(axis=0), biases.mean(axis=0)
    assert np.all(observed < 0), observed  # Jensen: biased low
    # Both means are over independent repeats: compare within 4 standard errors of their difference.
    spread = np.std(errors - biases, axis=0, ddof=1) / math.sqrt(repeats)
    assert np.all(np.abs(observed - predicted) <= 4 * spread + 0.25 * np.abs(observed)), (observed, predicted, spread)


def test_entropy_rate_doubles_draws_until_the_bias_is_below_the_standard_error():
    graph = _context_graph()
    kernels = sample_kernels(jax.random.key(13), graph)
    tokens = np.asarray(sampler.sample_tokens(jax.random.key(16), graph, kernels, 64, 24))
    fixed = api.entropy_rate(graph, kernels, tokens, key=jax.random.key(17), num_draws=2)
    rate = api.entropy_rate(graph, kernels, tokens, key=jax.random.key(17))
    assert float(fixed.bias) > float(fixed.standard_error)  # two draws are not enough here
    assert 0 <= float(rate.bias) <= float(rate.standard_error), rate


def test_context_graphs_refuse_the_exact_pass_and_need_a_key():
    graph = _context_graph()
    kernels = sample_kernels(jax.random.key(15), graph)
    tokens = np.zeros((2, 3), np.int32)
    with pytest.raises(ValueError, match="context nodes"):
        api.token_losses(graph, kernels, tokens)
    with pytest.raises(ValueError, match="key=jax.random.key"):
        api.entropy_rate(graph, kernels, tokens)
    plain = GraphSpec.from_config(TINY_GRAPHS["feedback"])
    with pytest.raises(ValueError, match="no context nodes"):
        api.context_log_likelihood(plain, sample_kernels(jax.random.key(0), plain), tokens, jax.random.key(0))

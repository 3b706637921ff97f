"""The "stationary" initial state in the exact forward pass: the unobserved burn-in summed out, against brute force.

The brute force enumerates every hidden value of every step, burn-in and emitted, and every token of the burn-in,
and sums the probabilities of the paths; it shares no code with the forward pass. Float64 tables have their rows
renormalised in float64, so that rows are distributions in exact arithmetic (the float32 Dirichlet draws sum to 1
only up to ~1e-7, which the prior's per-step normalisation would otherwise show as a 1e-8 difference).
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gssm_jax.errors import UserError
from gssm_jax.gssm.families import FAMILIES
from gssm_jax.gssm.graph import GraphSpec, experiment1_graph_config
from gssm_jax.gssm.initial_state import DEFAULT_BURN_IN
from gssm_jax.gssm.kernels import conditional_tables, sample_kernels
from gssm_jax.inference import api, chains, factorised, numpy_forward
from gssm_jax.sampling import sampler

FLOAT32_EPS = float(np.finfo(np.float32).eps)
FLOAT64_EPS = float(np.finfo(np.float64).eps)

TINY_GRAPHS = {
    "feedback": experiment1_graph_config(2, 2, 3, 0.5, 0.5),  # the chain passes
    "chain": {"nodes": [  # A[t] reads X[t-1], B[t] reads A[t], X reads B: the general pass
        {"name": "A", "states": 2, "alpha": 0.5, "parents": ["X"]},
        {"name": "B", "states": 3, "alpha": 0.5, "parents": ["A"]},
        {"name": "X", "states": 3, "alpha": 0.5, "parents": ["B"]},
    ]},
    "two_parents": {"nodes": [  # hidden nodes listed out of sampling order
        {"name": "B", "states": 2, "alpha": 0.5, "parents": ["A", "X"]},
        {"name": "A", "states": 2, "alpha": 0.3, "parents": ["X"]},
        {"name": "X", "states": 3, "alpha": 0.5, "parents": ["B", "A"]},
    ]},
}


def _float64_case(name, seed=0):
    """graph, float64 kernels with rows renormalised in float64, and their conditional tables (numpy)."""
    graph = GraphSpec.from_config(TINY_GRAPHS[name])
    kernels = sample_kernels(jax.random.key(seed), graph)
    with jax.enable_x64(True):  # the kernels are used under enable_x64 only
        kernels = jax.tree.map(lambda table: jnp.asarray(table, jnp.float64), kernels)
        kernels = jax.tree.map(lambda table: table / table.sum(axis=-1, keepdims=True), kernels)
        return graph, kernels, {n: np.asarray(t) for n, t in conditional_tables(graph, kernels).items()}


def _path_probabilities(graph, tables, hidden_path, tokens):
    """Probabilities of the prefixes of one path from the zero state: hidden_path (steps, hidden), tokens (steps,)."""
    previous = {name: 0 for name in (*graph.hidden_order, graph.observed)}
    probability, prefixes = 1.0, []
    for values, token in zip(hidden_path, tokens, strict=True):
        current = {}
        for name, value in zip(graph.hidden_order, values, strict=True):
            current[name] = value
            index = tuple(previous[p] if p in (name, graph.observed) else current[p] for p in graph.inputs(name))
            probability *= tables[name][(*index, value)]
        probability *= tables[graph.observed][(*(current[p] for p in graph.inputs(graph.observed)), token)]
        current[graph.observed] = token
        previous = current
        prefixes.append(probability)
    return prefixes


def brute_force_losses(graph, tables, tokens, burn_in):
    """-log p(x_t | x_<t) (batch, length), float64: x_0.. emitted after `burn_in` unobserved steps."""
    sizes = [graph.node(name).states for name in graph.hidden_order]
    results = []
    for sequence in np.asarray(tokens):
        length = len(sequence)
        prefix = np.zeros(length)
        for flat in itertools.product(*[range(size) for size in sizes] * (burn_in + length)):
            hidden_path = np.reshape(flat, (burn_in + length, len(sizes)))
            for burn_in_tokens in itertools.product(range(graph.vocab_size), repeat=burn_in):
                prefix += _path_probabilities(graph, tables, hidden_path, [*burn_in_tokens, *sequence])[burn_in:]
        prefix /= [math.prod(sizes) ** (length - 1 - t) for t in range(length)]  # later hidden values summed too
        results.append(-np.diff(np.log(prefix), prepend=0.0))
    return np.array(results)


def brute_force_prior(graph, tables, burn_in):
    """The hidden values' distribution at step `burn_in` (S,), C-order over hidden_order, by enumeration."""
    sizes = [graph.node(name).states for name in graph.hidden_order]
    prior = np.zeros(sizes)
    for flat in itertools.product(*[range(size) for size in sizes] * burn_in):
        hidden_path = np.reshape(flat, (burn_in, len(sizes)))
        for tokens in itertools.product(range(graph.vocab_size), repeat=burn_in):
            # the path's probability times the transition into each value of step burn_in (X's factor there is 1)
            weight = _path_probabilities(graph, tables, hidden_path, tokens)[-1] if burn_in else 1.0
            previous = {name: 0 for name in (*graph.hidden_order, graph.observed)}
            if burn_in:
                previous = {**dict(zip(graph.hidden_order, hidden_path[-1], strict=True)), graph.observed: tokens[-1]}
            for values in itertools.product(*[range(size) for size in sizes]):
                current, probability = dict(zip(graph.hidden_order, values, strict=True)), weight
                for name in graph.hidden_order:
                    index = tuple(previous[p] if p in (name, graph.observed) else current[p]
                                  for p in graph.inputs(name))
                    probability *= tables[name][(*index, current[name])]
                prior[values] += probability
    return prior.reshape(-1)


@pytest.mark.parametrize("name", sorted(TINY_GRAPHS))
def test_prior_matches_enumeration_and_the_dense_chain(name):
    graph, _, tables = _float64_case(name)
    with jax.enable_x64(True):
        tables64 = {n: jnp.asarray(t) for n, t in tables.items()}
        for steps in (0, 1, 2):
            prior = np.asarray(api._burn_in_prior(graph, tables64, steps))
            assert prior.dtype == np.float64
            np.testing.assert_allclose(prior, brute_force_prior(graph, tables, steps), rtol=0, atol=1e-14)
        prior = np.asarray(api._burn_in_prior(graph, tables64, 40))
    np.testing.assert_allclose(prior, numpy_forward.dense_burn_in_prior(graph, tables, 40), rtol=0, atol=1e-13)
    # Zero steps: the zero state's first transition, which the zero-state forward pass starts with.
    first = numpy_forward.dense_transitions(graph, tables)[0, 0]
    np.testing.assert_allclose(numpy_forward.dense_burn_in_prior(graph, tables, 0), first, atol=1e-15)


@pytest.mark.parametrize("implementation", ["cpu", "batched"])
@pytest.mark.parametrize("name", sorted(TINY_GRAPHS))
def test_stationary_token_losses_match_brute_force_in_float64(name, implementation):
    graph, kernels, tables = _float64_case(name, seed=1)
    tokens = np.asarray(sampler.sample_tokens(jax.random.key(2), graph, sample_kernels(jax.random.key(1), graph), 3,
                                              2, initial_state="stationary", burn_in=2))
    with jax.enable_x64(True):
        losses = np.asarray(api.token_losses(graph, kernels, tokens, implementation=implementation,
                                             initial_state="stationary", burn_in=2))
    # As tests/inference/test_api.py: 100 * S * T eps bounds the float64 rounding of the pass.
    bound = 100 * graph.num_latent_states * tokens.size * FLOAT64_EPS
    np.testing.assert_allclose(losses, brute_force_losses(graph, tables, tokens, 2), rtol=0, atol=bound)


@pytest.mark.parametrize("chain_pass", [chains.forward_minor, chains.forward_blocks, chains.forward_blocks_batched,
                                        None])
def test_every_pass_starts_from_the_prior_as_the_dense_pass(chain_pass):
    """Uneven state counts (padding in forward_minor, two blocks in forward_blocks), a long burn-in; the
    general pass (None) on the same graph."""
    graph = GraphSpec.from_config({"nodes": [
        {"name": "Z1", "states": 3, "alpha": 0.2, "parents": ["X"]},
        {"name": "Z2", "states": 4, "alpha": 0.2, "parents": ["X"], "kernel": "product"},
        {"name": "Z3", "states": 2, "alpha": 0.3, "parents": []},
        {"name": "X", "states": 5, "alpha": 0.1, "parents": ["Z3", "Z1"]},
    ]})
    kernels = sample_kernels(jax.random.key(4), graph)
    tokens = np.asarray(sampler.sample_tokens(jax.random.key(5), graph, kernels, 5, 16, initial_state="stationary",
                                              burn_in=30))
    with jax.enable_x64(True):
        kernels64 = jax.tree.map(lambda table: jnp.asarray(table, jnp.float64), kernels)
        # Rows renormalised in float64, as _float64_case: the prior normalises each step, the dense oracle does not.
        tables64 = {n: t / t.sum(axis=-1, keepdims=True) for n, t in conditional_tables(graph, kernels64).items()}
        prior = api._burn_in_prior(graph, tables64, 30)
        if chain_pass is None:
            losses = factorised.forward_chunk(graph, tables64, jnp.asarray(tokens, jnp.int32), frozenset(), prior)
        else:
            losses = jax.jit(chain_pass, static_argnums=0)(graph, tables64, jnp.asarray(tokens, jnp.int32), prior)
        numpy_tables = {n: np.asarray(t) for n, t in tables64.items()}
    expected = numpy_forward.dense_losses(graph, numpy_tables, tokens, np.asarray(prior))
    np.testing.assert_allclose(np.asarray(losses), expected, rtol=0,
                               atol=100 * graph.num_latent_states * tokens.size * FLOAT64_EPS)
    np.testing.assert_allclose(np.asarray(prior), numpy_forward.dense_burn_in_prior(graph, numpy_tables, 30),
                               atol=1e-13)


def test_a_prior_of_the_zero_state_gives_the_zero_state_losses():
    """The first step peeled off (the prior of 0 burn-in steps) is the zero state's first step, in float32."""
    graph = GraphSpec.from_config(TINY_GRAPHS["two_parents"])
    kernels = sample_kernels(jax.random.key(6), graph)
    tokens = sampler.sample_tokens(jax.random.key(7), graph, kernels, 6, 20)
    tables = api._tables(graph, kernels)
    zeros = np.asarray(api.token_losses(graph, kernels, tokens))
    prior = api._burn_in_prior(graph, tables, 0)
    peeled = np.asarray(api._token_losses(graph, tables, jnp.asarray(tokens, jnp.int32), "cpu", prior))
    # float32, as test_matches_dense_forward_pass_on_a_small_graph: 64 eps per token.
    np.testing.assert_allclose(peeled, zeros, atol=64 * FLOAT32_EPS * max(1.0, zeros.max()))
    # "stationary" with no burn-in is the zero state, through the same path.
    np.testing.assert_array_equal(np.asarray(api.token_losses(graph, kernels, tokens, initial_state="stationary",
                                                              burn_in=0)), zeros)


def test_entropy_rate_and_likelihoods_take_the_initial_state():
    graph = GraphSpec.from_config(experiment1_graph_config(2, 3, 6, 0.3, 0.3))
    kernels = sample_kernels(jax.random.key(8), graph)
    initial = {"initial_state": "stationary", "burn_in": 50}
    tokens = sampler.sample_tokens(jax.random.key(9), graph, kernels, 16, 24, **initial)
    losses = np.asarray(api.token_losses(graph, kernels, tokens, **initial), np.float64)
    rate = api.entropy_rate(graph, kernels, tokens, **initial)
    np.testing.assert_allclose(float(rate.nats_per_token), losses.sum(axis=1).mean() / 24, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(api.log_likelihood(graph, kernels, tokens, **initial)),
                               -losses.sum(axis=1), rtol=1e-5)
    # The zero-state losses of the same tokens differ (the first tokens are not those of the zero state).
    assert not np.allclose(np.asarray(api.token_losses(graph, kernels, tokens))[:, 0], losses[:, 0])


def test_stationary_is_refused_where_it_is_not_exact():
    graph = GraphSpec.from_config({"nodes": [
        {"name": "Z", "states": 2, "alpha": 0.5, "parents": ["X"]},
        {"name": "X", "states": 3, "alpha": 0.7, "parents": ["Z"], "mode": "context"},
    ]})
    kernels = sample_kernels(jax.random.key(10), graph)
    tokens = np.zeros((2, 3), np.int32)
    for call in (lambda: api.entropy_rate(graph, kernels, tokens, key=jax.random.key(0), initial_state="stationary"),
                 lambda: api.context_log_likelihood(graph, kernels, tokens, jax.random.key(0),
                                                    initial_state="stationary")):
        with pytest.raises(UserError, match=r"^config.data.initial_state='stationary' has no exact likelihood for "
                                            r"graphs with context nodes \['X'\]"):
            call()
    api.context_log_likelihood(graph, kernels, tokens, jax.random.key(0), 2, initial_state="stationary", burn_in=0)
    plain = GraphSpec.from_config(TINY_GRAPHS["feedback"])
    plain_kernels = sample_kernels(jax.random.key(0), plain)
    with pytest.raises(UserError, match="config.data.initial_state is 'uniform'; use one of zeros, stationary"):
        api.token_losses(plain, plain_kernels, tokens, initial_state="uniform")
    with pytest.raises(UserError, match="config.data.burn_in is -1; use an integer >= 0"):
        api.entropy_rate(plain, plain_kernels, tokens, initial_state="stationary", burn_in=-1)


def _total_variation(p, q):
    return 0.5 * float(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum())


@pytest.mark.parametrize("family", ["four_by_four", "chain"])
def test_the_default_burn_in_mixes_the_experiment1_graphs(family):
    """DEFAULT_BURN_IN's justification on the graphs small enough for a test: at the reference alphas (the small
    alpha_X side) and at a small alpha_Z side, 256 unobserved steps leave the hidden values within 1e-4 of their
    distribution after 2048 steps in total variation, while the zero state's first step is far from it. (Both
    alphas near 1e-3 make the chains nearly reducible: no practical burn-in mixes them; see initial_state.)"""
    for alpha_x, alpha_z in (FAMILIES[family].reference, (0.05, 1e-3)):
        graph = GraphSpec.from_config(FAMILIES[family].config(alpha_x, alpha_z))
        tables = api._tables(graph, sample_kernels(jax.random.key(0), graph))
        priors = {steps: api._burn_in_prior(graph.structure, tables, steps) for steps in (0, DEFAULT_BURN_IN, 2048)}
        assert _total_variation(priors[DEFAULT_BURN_IN], priors[2048]) < 1e-4, (alpha_x, alpha_z)
        assert _total_variation(priors[0], priors[2048]) > 0.5, (alpha_x, alpha_z)

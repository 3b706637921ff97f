"""Dirichlet kernels: exact sampling at tiny alpha, modes, product conditionals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gssm_jax.graph import GraphSpec, experiment1_graph_config
from gssm_jax.kernels import (
    PRODUCT_CLIP,
    conditional_table,
    conditional_tables,
    sample_dirichlet,
    sample_kernels,
)

# Every statistical test below fails by chance with probability <= FALSE_FAILURE_RATE.
FALSE_FAILURE_RATE = 1e-6


@pytest.mark.parametrize("alpha", [1e-4, 1e-2, 0.5, 3.0])
def test_dirichlet_component_mean_and_variance_match_closed_form(alpha):
    # One component of Dirichlet(alpha * 1_K) is Beta(alpha, (K-1) alpha):
    # mean 1/K, variance (K-1) / (K^2 (K alpha + 1)). The sample mean of N rows is normal to within
    # the CLT, so |mean - 1/K| <= z * sqrt(var / N) with z the two-sided quantile at our rate.
    num_states, num_rows = 4, 20_000
    rows = np.asarray(sample_dirichlet(jax.random.key(0), alpha, (num_rows, num_states)), np.float64)
    assert np.all(np.isfinite(rows))
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-5)
    variance = (num_states - 1) / (num_states**2 * (num_states * alpha + 1))
    z = stats.norm.isf(FALSE_FAILURE_RATE / 2 / num_states)
    assert np.all(np.abs(rows.mean(axis=0) - 1 / num_states) <= z * np.sqrt(variance / num_rows))
    # The sample variance of a bounded variable: its standard error is at most sqrt(E[(x-m)^4]/N) <= sqrt(var/N)
    # because (x-m)^4 <= (x-m)^2 on [0, 1].
    assert np.all(np.abs(rows.var(axis=0) - variance) <= z * np.sqrt(variance / num_rows))


def test_dirichlet_marginal_follows_beta_distribution():
    alpha, num_states = 0.3, 5
    rows = np.asarray(sample_dirichlet(jax.random.key(1), alpha, (5_000, num_states)), np.float64)
    p_value = stats.kstest(rows[:, 2], stats.beta(alpha, (num_states - 1) * alpha).cdf).pvalue
    assert p_value > FALSE_FAILURE_RATE


def test_tiny_alpha_rows_are_near_one_hot_not_nan():
    # At alpha = 1e-4 a row puts mass >= 1 - 1e-3 on one entry with probability > 0.99 (the other
    # components are Beta(1e-4, ...) and exceed 1e-3 with probability ~ 1e-4 * log(1e3) each).
    rows = np.asarray(sample_dirichlet(jax.random.key(2), 1e-4, (2_000, 8)))
    assert np.all(np.isfinite(rows))
    assert np.mean(rows.max(axis=1) > 1 - 1e-3) > 0.99
    # each column wins equally often: binomial bound at our rate
    winners = np.bincount(rows.argmax(axis=1), minlength=8)
    bound = stats.norm.isf(FALSE_FAILURE_RATE / 16) * np.sqrt(2_000 * (1 / 8) * (7 / 8))
    assert np.all(np.abs(winners - 2_000 / 8) <= bound)


def test_kernel_shapes_and_determinism():
    graph = GraphSpec.from_config(experiment1_graph_config(2, 3, 5, 0.1, 0.2))
    kernels = sample_kernels(jax.random.key(3), graph)
    again = sample_kernels(jax.random.key(3), graph)
    for name in ("Z1", "Z2", "X"):
        assert kernels[name].shape == graph.kernel_shape(name)
        np.testing.assert_array_equal(kernels[name], again[name])
    assert not np.allclose(kernels["Z1"], kernels["Z2"])


def _mode_graph(mode, kernel="fullrank"):
    return GraphSpec.from_config({"nodes": [
        {"name": "Z", "states": 4, "alpha": 0.5, "parents": ["X"], "mode": mode, "kernel": kernel},
        {"name": "X", "states": 6, "alpha": 0.5, "parents": ["Z"], "mode": "dead" if mode == "dead" else "default",
         "kernel": kernel},
    ]})


def test_dead_mode_puts_largest_entry_in_column_zero():
    for kernel in ("fullrank", "product"):
        graph = _mode_graph("dead", kernel)
        kernels = sample_kernels(jax.random.key(4), graph)
        for name in ("Z", "X"):
            table = np.asarray(conditional_table(graph, kernels, name))
            assert np.all(table.argmax(axis=-1) == 0), (kernel, name)


def test_slow_mode_puts_largest_entry_on_previous_value():
    graph = _mode_graph("slow")
    table = np.asarray(conditional_table(graph, sample_kernels(jax.random.key(5), graph), "Z"))
    own_previous = np.arange(4)[:, None]
    assert np.all(table.argmax(axis=-1) == own_previous)
    # the swap keeps each row's multiset of values
    default = np.asarray(sample_kernels(jax.random.key(5), _mode_graph("default"))["Z"])
    np.testing.assert_allclose(np.sort(table, axis=-1), np.sort(default, axis=-1))


def test_product_conditional_matches_numpy_reference():
    graph = GraphSpec.from_config({"nodes": [
        {"name": "A", "states": 3, "alpha": 0.05, "parents": ["X"], "kernel": "product"},
        {"name": "B", "states": 2, "alpha": 0.05, "parents": ["A", "X"], "kernel": "product"},
        {"name": "X", "states": 4, "alpha": 0.05, "parents": ["A", "B"], "kernel": "product"},
    ]})
    kernels = sample_kernels(jax.random.key(6), graph)
    own, parent_a, previous_x = (np.clip(np.asarray(t, np.float64), PRODUCT_CLIP, None) for t in kernels["B"])
    expected = np.empty((2, 3, 4, 2))
    for i in range(2):
        for j in range(3):
            for k in range(4):
                row = own[i] * parent_a[j] * previous_x[k]
                expected[i, j, k] = row / row.sum()
    table = conditional_tables(graph, kernels)["B"]
    assert table.shape == graph.kernel_shape("B")
    np.testing.assert_allclose(table, expected, rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(table) > 0)


def test_float64_kernels():
    graph = GraphSpec.from_config(experiment1_graph_config(1, 2, 3, 0.1, 0.1))
    with jax.enable_x64(True):
        kernels = sample_kernels(jax.random.key(7), graph, dtype=jnp.float64)
        assert kernels["X"].dtype == jnp.float64

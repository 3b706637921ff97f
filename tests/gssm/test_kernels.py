"""Dirichlet kernels: exact sampling at tiny alpha, modes, product conditionals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from gssm_jax.gssm.graph import GraphSpec, experiment1_graph_config
from gssm_jax.gssm.kernels import (
    PRODUCT_CLIP,
    conditional_table,
    conditional_tables,
    sample_dirichlet,
    sample_kernels,
    sample_log_gamma,
)
from gssm_jax.sampling import numpy_sampler, sampler, tables

# Every statistical test below fails by chance with probability <= FALSE_FAILURE_RATE.
FALSE_FAILURE_RATE = 1e-6


def log_gamma_cdf(x: np.ndarray, alpha: float) -> np.ndarray:
    """P(log G <= x) for G ~ Gamma(alpha), float64, also where exp(x) underflows (x ~ -1e4 at alpha=1e-4).

    It is the regularised incomplete gamma P(alpha, e^x). For x < -30 the series
    P(alpha, y) = y^alpha / Gamma(alpha + 1) * (1 - alpha y / (alpha + 1) + ...) is used in log space:
    its first term has relative error <= y <= e^-30.
    """
    x = np.asarray(x, np.float64)
    small = x < -30
    return np.where(small, np.exp(alpha * np.minimum(x, -30) - special.gammaln(alpha + 1)),
                    special.gammainc(alpha, np.exp(np.maximum(x, -30))))


LOG_GAMMA_ALPHAS = [1e-4, 1e-3, 0.05, 0.5, 1.0, 2.5, 10.0]


@pytest.mark.parametrize("alpha", LOG_GAMMA_ALPHAS)
def test_log_gamma_follows_exact_distribution(alpha):
    # Kolmogorov-Smirnov against the exact CDF of log G; at 100k draws the test detects a CDF error of
    # ~0.008 at our false-failure rate. float32 resolution moves the CDF by ~1e-7.
    draws = np.asarray(sample_log_gamma(jax.random.key(11), alpha, (100_000,)), np.float64)
    assert np.all(np.isfinite(draws))
    assert stats.kstest(draws, lambda x: log_gamma_cdf(x, alpha)).pvalue > FALSE_FAILURE_RATE


@pytest.mark.parametrize("alpha", LOG_GAMMA_ALPHAS)
def test_log_gamma_mean_and_variance_match_polygamma(alpha):
    # log G has cumulants kappa_k = polygamma(k - 1, alpha): mean digamma(alpha), variance trigamma(alpha),
    # fourth cumulant polygamma(3, alpha). The sample mean of N draws has standard error sqrt(kappa_2 / N),
    # the sample variance sqrt((kappa_4 + 2 kappa_2^2) / N); both are normal to within the CLT at N = 200k
    # (log G has exponential tails), so each stays within z standard errors.
    num_draws = 200_000
    draws = np.asarray(sample_log_gamma(jax.random.key(12), alpha, (num_draws,)), np.float64)
    mean, variance, kappa_4 = special.digamma(alpha), special.polygamma(1, alpha), special.polygamma(3, alpha)
    z = stats.norm.isf(FALSE_FAILURE_RATE / 4)
    assert abs(draws.mean() - mean) <= z * np.sqrt(variance / num_draws)
    assert abs(draws.var(ddof=1) - variance) <= z * np.sqrt((kappa_4 + 2 * variance**2) / num_draws)


def test_log_gamma_small_pools_keep_distribution_and_are_pure():
    # pool_size=8 forces ~500 pools of redrawn proposals per row (about 4% of 100k are rejected at first).
    alphas = jnp.array([0.02, 1.0, 4.0])
    draws = sample_log_gamma(jax.random.key(13), alphas[:, None], (3, 100_000), pool_size=8)
    again = sample_log_gamma(jax.random.key(13), alphas[:, None], (3, 100_000), pool_size=8)
    np.testing.assert_array_equal(draws, again)
    for row, alpha in zip(np.asarray(draws, np.float64), np.asarray(alphas, np.float64), strict=True):
        assert stats.kstest(row, lambda x, a=alpha: log_gamma_cdf(x, a)).pvalue > FALSE_FAILURE_RATE / 3


def test_log_gamma_invalid_alpha_gives_nan_and_keys_matter():
    draws = np.asarray(sample_log_gamma(jax.random.key(14), jnp.array([0.5, 0.0, -1.0, jnp.nan, jnp.inf]), (5,)))
    assert np.isfinite(draws[0]) and np.all(np.isnan(draws[1:]))
    first, second = (np.asarray(sample_log_gamma(jax.random.key(k), 0.3, (64,))) for k in (15, 16))
    assert not np.any(first == second)


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


def _eight_input_product_graph(alpha: float) -> GraphSpec:
    """eight_by_four with every kernel a product: X's conditional multiplies 8 clipped rows."""
    config = experiment1_graph_config(8, 4, 64, alpha, alpha)
    for node in config["nodes"]:
        node["kernel"] = "product"
    return GraphSpec.from_config(config)


def _float64_product(tables) -> np.ndarray:
    """The renormalised product of clipped rows, multiplied directly in float64 ((1e-10)^8 = 1e-80 is a normal
    float64), by broadcasting: an oracle independent of the log-space code."""
    tables = [np.clip(np.asarray(t, np.float64), PRODUCT_CLIP, None) for t in tables]
    product = np.ones((1,) * len(tables) + (tables[0].shape[-1],))
    for axis, table in enumerate(tables):
        shape = [1] * len(tables) + [table.shape[-1]]
        shape[axis] = table.shape[0]
        product = product * table.reshape(shape)
    return product / product.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("alpha", [0.05, 1e-3])
def test_product_of_eight_inputs_matches_float64(alpha):
    # The float32 direct product gave NaN rows here (31 of 65,536 at alpha 0.05, all of them at 1e-3).
    graph = _eight_input_product_graph(alpha)
    kernels = sample_kernels(jax.random.key(11), graph)
    table = np.asarray(conditional_table(graph, kernels, "X"))
    assert table.shape == graph.kernel_shape("X") and table.dtype == np.float32
    assert np.all(np.isfinite(table))
    # 64 float32 entries summing to 1: rounding <= 64 * 2^-24.
    np.testing.assert_allclose(table.sum(axis=-1), 1.0, atol=64 * 2.0**-24)
    # Each log term |log p| <= 23.1 (clip 1e-10) rounds by <= 23.1 * 2^-24 and 8 of them add with 7 roundings of
    # sums <= 185: log error <= 8 * 23.1 * 2^-24 + 7 * 185 * 2^-24 = 9e-5, i.e. a relative error <= 1e-4 (softmax
    # adds a few ulps); entries below float32's smallest normal (1.2e-38) have no relative precision.
    expected = _float64_product(kernels["X"])
    np.testing.assert_allclose(table, expected, rtol=1e-4, atol=np.finfo(np.float32).tiny)


def test_reference_product_matches_float64_and_jax():
    graph = _eight_input_product_graph(1e-3)
    kernels = sample_kernels(jax.random.key(12), graph)
    tables = [np.asarray(t, np.float64) for t in kernels["X"]]
    table = numpy_sampler.product_conditional(tables)
    np.testing.assert_allclose(table, _float64_product(tables), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(table.sum(axis=-1), 1.0, atol=64 * 2.0**-52)
    np.testing.assert_allclose(np.asarray(conditional_table(graph, kernels, "X")), table, rtol=1e-4,
                               atol=np.finfo(np.float32).tiny)


def test_sampler_refuses_tables_that_are_not_probabilities():
    graph = GraphSpec.from_config(experiment1_graph_config(1, 2, 3, 0.5, 0.5))
    kernels = sample_kernels(jax.random.key(13), graph)
    kernels["X"] = kernels["X"].at[1, 0].set(jnp.nan)
    for call in (lambda: sampler.sample_tokens(jax.random.key(0), graph, kernels, 4, 8),
                 lambda: tables.sampling_tables(graph, kernels)):
        with pytest.raises(ValueError, match=r"kernels\['X'\]: 1 of 2 conditional rows are not probabilities") as error:
            call()
        assert "\n" not in str(error.value)
    kernels["X"] = kernels["X"].at[1].set(0.0)
    with pytest.raises(ValueError, match="1 of 2 conditional rows"):
        sampler.sample_tokens(jax.random.key(0), graph, kernels, 4, 8)


def test_float64_kernels():
    graph = GraphSpec.from_config(experiment1_graph_config(1, 2, 3, 0.1, 0.1))
    with jax.enable_x64(True):
        kernels = sample_kernels(jax.random.key(7), graph, dtype=jnp.float64)
        assert kernels["X"].dtype == jnp.float64

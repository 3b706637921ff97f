"""Intervals, paired tests, rank comparisons and Holm's correction against closed forms, scipy and enumeration."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from gssm_jax import statistics
from gssm_jax.statistics import confidence_interval, holm, paired_comparison, paired_rank_comparison


def student_quantile_2(probability: float) -> float:
    """Closed-form quantile of Student's t with 2 degrees of freedom: F(t) = 1/2 + t / (2 sqrt(2 + t^2))."""
    a = 2 * probability - 1
    return a * math.sqrt(2 / (1 - a * a))


def student_cdf_2(t: float) -> float:
    return 0.5 + t / (2 * math.sqrt(2 + t * t))


def enumerated_sign_flip_p(differences: np.ndarray) -> float:
    """P(|mean of sign-flipped differences| >= |observed mean|) over all 2^n flips, by brute force."""
    observed = abs(differences.mean())
    flips = np.array(list(itertools.product((1.0, -1.0), repeat=differences.size)))
    means = np.abs(flips @ differences / differences.size)
    return float(np.mean(means >= observed * (1 - 1e-12)))


def test_interval_of_three_values_matches_the_closed_form_quantile():
    interval = confidence_interval([0.10, 0.12, 0.11], level=0.95)
    half_width = student_quantile_2(0.975) * 0.01 / math.sqrt(3)  # sample std is exactly 0.01
    assert interval.mean == pytest.approx(0.11)
    assert interval.low == pytest.approx(0.11 - half_width, rel=1e-9)
    assert interval.high == pytest.approx(0.11 + half_width, rel=1e-9)
    assert interval.stderr == pytest.approx(0.01 / math.sqrt(3))


def test_interval_covers_the_true_mean_at_its_level():
    # 4000 normal samples of size 3: the coverage is Binomial(4000, 0.95)/4000 with standard deviation
    # sqrt(0.95 * 0.05 / 4000) = 0.0034; a 4.5-sigma band fails by chance with probability < 1e-5.
    rng = np.random.default_rng(1)
    samples = rng.normal(2.0, 0.5, size=(4000, 3))
    covered = [(i.low <= 2.0 <= i.high) for i in map(confidence_interval, samples)]
    assert abs(np.mean(covered) - 0.95) < 4.5 * math.sqrt(0.95 * 0.05 / 4000)


def test_paired_t_matches_the_closed_form_on_three_pairs():
    # Differences -0.1, -0.12, -0.08: mean -0.1, sample std 0.02, t = -0.1 / (0.02 / sqrt 3) with 2 dof.
    result = paired_comparison([0.10, 0.10, 0.13], [0.20, 0.22, 0.21])
    t = -0.1 / (0.02 / math.sqrt(3))
    assert result.pairs == 3 and result.dof == 2
    assert result.mean_difference == pytest.approx(-0.1)
    assert result.t_statistic == pytest.approx(t, rel=1e-9)
    assert result.t_p_value == pytest.approx(2 * student_cdf_2(t), rel=1e-9)
    half_width = student_quantile_2(0.975) * 0.02 / math.sqrt(3)
    assert (result.low, result.high) == pytest.approx((-0.1 - half_width, -0.1 + half_width), rel=1e-9)
    # All three differences negative: the observed mean is the most extreme of the 8 flips (and its mirror).
    assert result.permutation_exact and result.permutation_p_value == pytest.approx(2 / 8)
    assert result.smallest_permutation_p == pytest.approx(2 / 8)


def test_paired_comparison_agrees_with_scipy_and_enumeration():
    rng = np.random.default_rng(0)
    for pairs in (4, 6, 9):
        a = rng.normal(0.0, 1.0, pairs)
        b = a + rng.normal(0.4, 0.5, pairs)
        result = paired_comparison(a, b, level=0.9)
        reference = stats.ttest_rel(a, b)
        assert result.t_statistic == pytest.approx(reference.statistic, rel=1e-12)
        assert result.t_p_value == pytest.approx(reference.pvalue, rel=1e-12)
        assert (result.low, result.high) == pytest.approx(tuple(reference.confidence_interval(0.9)), rel=1e-12)
        assert result.permutation_p_value == pytest.approx(enumerated_sign_flip_p(a - b), abs=1e-12)
        assert result.smallest_permutation_p == pytest.approx(2.0 / 2**pairs)


def test_many_pairs_use_a_reproducible_monte_carlo_close_to_the_enumeration():
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 1.0, 20)
    b = a + rng.normal(0.3, 1.0, 20)
    exact = enumerated_sign_flip_p(a - b)  # 2^20 flips
    first, second = paired_comparison(a, b), paired_comparison(a, b)
    assert not first.permutation_exact and first.permutation_p_value == second.permutation_p_value
    # 99,999 resamples: standard error sqrt(p (1 - p) / 1e5) <= 0.0016; 5 of them fail with probability < 1e-6.
    assert abs(first.permutation_p_value - exact) < 5 * math.sqrt(exact * (1 - exact) / 99_999) + 1e-5


def test_degenerate_inputs_are_never_significant():
    assert math.isnan(confidence_interval([1.0]).low)
    single = paired_comparison([1.0], [2.0])
    assert math.isnan(single.t_p_value) and single.permutation_p_value == 1.0
    constant = paired_comparison([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])  # every difference -1: no spread
    assert math.isnan(constant.t_p_value) and math.isnan(constant.low)
    assert constant.permutation_p_value == pytest.approx(2 / 8)
    with pytest.raises(ValueError, match="as many values"):
        paired_comparison([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        confidence_interval([])


def test_rank_comparison_by_hand_with_censoring():
    # Pooled values 100, 150, 200, 300, inf, inf rank 1, 2, 3, 4, 5.5, 5.5.
    a, b = [100.0, math.inf, 300.0], [200.0, 150.0, math.inf]
    result = paired_rank_comparison(a, b)
    assert (result.a_smaller, result.b_smaller, result.ties) == (2, 1, 0)
    assert (result.censored_a, result.censored_b) == (1, 1)
    assert result.ranks.mean_difference == pytest.approx((-2 + 3.5 - 1.5) / 3)
    assert result.ranks.permutation_p_value == pytest.approx(enumerated_sign_flip_p(np.array([-2, 3.5, -1.5])))
    # Side b never reaches in 5 pairs while a always does: every rank difference is negative.
    result = paired_rank_comparison([1.0, 2.0, 3.0, 4.0, 5.0], [math.inf] * 5)
    assert result.a_smaller == 5 and result.censored_b == 5
    assert result.ranks.permutation_p_value == pytest.approx(2 / 32)
    # Both censored in every pair: all ties, nothing to test.
    result = paired_rank_comparison([math.inf] * 3, [math.inf] * 3)
    assert result.ties == 3 and result.ranks.permutation_p_value == 1.0 and math.isnan(result.ranks.t_p_value)
    with pytest.raises(ValueError, match="nan"):
        paired_rank_comparison([math.nan], [1.0])


def test_holm_by_hand():
    # Sorted 0.005, 0.01, 0.03, 0.04 scaled by 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06.
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    np.testing.assert_allclose(holm([np.nan, 0.02, 0.04]), [np.nan, 0.04, 0.04], rtol=1e-12)
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])
    np.testing.assert_allclose(holm([0.2]), [0.2])
    assert holm([]).size == 0 and np.isnan(holm([np.nan])).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([1.5])


def test_holm_rejects_what_the_textbook_step_down_procedure_rejects():
    rng = np.random.default_rng(5)
    for _ in range(200):
        p = rng.uniform(0, 0.1, rng.integers(1, 8)) ** rng.uniform(0.5, 2)
        alpha = 0.05
        rejected = np.zeros(p.size, bool)
        for step, index in enumerate(np.argsort(p)):  # reject while p_(i) < alpha / (m - i + 1), then stop
            if p[index] >= alpha / (p.size - step):
                break
            rejected[index] = True
        np.testing.assert_array_equal(holm(p) < alpha, rejected)


def test_mean_and_stderr_by_hand():
    mean, stderr = statistics.mean_and_stderr([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    variance = ((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2
    assert stderr == pytest.approx(math.sqrt(variance / 3))
    assert math.isnan(statistics.mean_and_stderr([3.0])[1])

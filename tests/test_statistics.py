"""Confidence intervals and t-tests against closed forms, scipy's own tests, and a coverage simulation."""

import math

import numpy as np
import pytest
from scipy import stats

from gssm_jax.analysis.statistics import confidence_interval, paired_t_test, welch_t_test


def student_cdf_4(t: float) -> float:
    """Closed-form CDF of Student's t with 4 degrees of freedom: 1/2 + (3/4) x (1 - x^2/3), x = t/sqrt(4+t^2)."""
    x = t / math.sqrt(4 + t * t)
    return 0.5 + 0.75 * x * (1 - x * x / 3)


def student_quantile_2(probability: float) -> float:
    """Closed-form quantile of Student's t with 2 degrees of freedom: F(t) = 1/2 + t / (2 sqrt(2 + t^2))."""
    a = 2 * probability - 1
    return a * math.sqrt(2 / (1 - a * a))


def test_interval_of_three_values_matches_the_closed_form_quantile():
    interval = confidence_interval([0.10, 0.12, 0.11], level=0.95)
    half_width = student_quantile_2(0.975) * 0.01 / math.sqrt(3)  # sample std is exactly 0.01
    assert interval.mean == pytest.approx(0.11)
    assert interval.low == pytest.approx(0.11 - half_width, rel=1e-9)
    assert interval.high == pytest.approx(0.11 + half_width, rel=1e-9)
    assert interval.stderr == pytest.approx(0.01 / math.sqrt(3))


def test_welch_with_equal_spreads_has_four_degrees_of_freedom_and_the_closed_form_p_value():
    test = welch_t_test([0.10, 0.12, 0.11], [0.20, 0.22, 0.21])
    statistic = -0.1 / math.sqrt(2 * 0.01**2 / 3)
    assert test.difference == pytest.approx(-0.1)
    assert test.dof == pytest.approx(4.0)
    assert test.statistic == pytest.approx(statistic)
    assert test.p_value == pytest.approx(2 * student_cdf_4(statistic), rel=1e-9)
    assert test.significant(0.05)


def test_welch_and_paired_agree_with_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.0, 1.0, 5), rng.normal(0.7, 3.0, 7)
    reference = stats.ttest_ind(a, b, equal_var=False)
    test = welch_t_test(a, b)
    assert test.statistic == pytest.approx(reference.statistic, rel=1e-10)
    assert test.p_value == pytest.approx(reference.pvalue, rel=1e-10)
    assert test.dof == pytest.approx(reference.df, rel=1e-10)
    low, high = reference.confidence_interval(0.95)
    assert (test.low, test.high) == pytest.approx((low, high), rel=1e-10)

    c = a + rng.normal(0.3, 0.2, 5)
    paired = paired_t_test(a, c)
    reference = stats.ttest_rel(a, c)
    assert paired.statistic == pytest.approx(reference.statistic, rel=1e-10)
    assert paired.p_value == pytest.approx(reference.pvalue, rel=1e-10)


def test_interval_covers_the_true_mean_at_its_level():
    # 4000 normal samples of size 3: the coverage is Binomial(4000, 0.95)/4000 with standard deviation
    # sqrt(0.95 * 0.05 / 4000) = 0.0034; a 4.5-sigma band fails by chance with probability < 1e-5.
    rng = np.random.default_rng(1)
    samples = rng.normal(2.0, 0.5, size=(4000, 3))
    covered = [(i.low <= 2.0 <= i.high) for i in map(confidence_interval, samples)]
    assert abs(np.mean(covered) - 0.95) < 4.5 * math.sqrt(0.95 * 0.05 / 4000)


def test_degenerate_inputs_are_never_significant():
    assert math.isnan(confidence_interval([1.0]).low)
    assert math.isnan(welch_t_test([1.0], [2.0, 3.0]).p_value)
    constant = welch_t_test([1.0, 1.0], [1.0, 1.0])
    assert math.isnan(constant.p_value) and not constant.significant(0.05)
    with pytest.raises(ValueError, match="as many values"):
        paired_t_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        confidence_interval([])

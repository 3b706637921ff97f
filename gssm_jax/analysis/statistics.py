"""Comparisons across graph seeds: Student-t confidence intervals and Welch's two-sample t-test.

Experiment 1 trains the same model on several graph seeds per side and compares the sides' mean
excess loss (nats per token). The seeds of one side are independent draws, so each side's mean has a
Student-t interval, and the difference of the two means is tested with Welch's unequal-variance
t-test (two-sided; the sides' spreads across seeds need not be equal). With seed k used on both
sides (same kernel key, data key and initialisation) a paired t-test on per-seed differences is
also available; it is more powerful when the pairing correlates the two sides' losses.

Only the t distribution's quantile and tail come from scipy; the statistics are computed here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats


@dataclasses.dataclass(frozen=True)
class Interval:
    """A sample mean with its two-sided Student-t confidence interval.

    Attributes:
      mean: sample mean.
      low, high: interval ends (nan for fewer than 2 values).
      stderr: standard error of the mean, sample std (ddof=1) / sqrt(count) (nan for < 2 values).
      count: number of values.
      level: confidence level, e.g. 0.95.
    """

    mean: float
    low: float
    high: float
    stderr: float
    count: int
    level: float


@dataclasses.dataclass(frozen=True)
class TTest:
    """A two-sided t-test of "mean difference = 0".

    Attributes:
      difference: mean(a) - mean(b) (for a paired test: mean of a_i - b_i).
      statistic: t statistic.
      dof: degrees of freedom (Welch-Satterthwaite for Welch's test, n - 1 when paired).
      p_value: two-sided p-value.
      low, high: confidence interval of the difference at `level`.
      level: confidence level of the interval.
      name: "Welch" or "paired".
    """

    difference: float
    statistic: float
    dof: float
    p_value: float
    low: float
    high: float
    level: float
    name: str

    def significant(self, alpha: float) -> bool:
        """Whether the test rejects equal means at significance level `alpha` (false when undefined)."""
        return bool(self.p_value < alpha)


def _as_array(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{name} is empty; need at least one value")
    return array


def confidence_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of `values` with the Student-t interval mean +- t_{(1+level)/2, n-1} * std(ddof=1) / sqrt(n)."""
    array = _as_array(values, "values")
    count = array.size
    mean = float(array.mean())
    if count < 2:
        return Interval(mean, math.nan, math.nan, math.nan, count, level)
    stderr = float(array.std(ddof=1) / math.sqrt(count))
    half_width = float(scipy_stats.t.ppf(0.5 + level / 2, count - 1)) * stderr
    return Interval(mean, mean - half_width, mean + half_width, stderr, count, level)


def _t_test(difference: float, stderr: float, dof: float, level: float, name: str) -> TTest:
    if not stderr > 0 or not math.isfinite(dof) or dof <= 0:
        # Zero spread (or too few values): the statistic is undefined; never call it significant.
        return TTest(difference, math.nan, dof, math.nan, math.nan, math.nan, level, name)
    statistic = difference / stderr
    p_value = float(2 * scipy_stats.t.sf(abs(statistic), dof))
    half_width = float(scipy_stats.t.ppf(0.5 + level / 2, dof)) * stderr
    return TTest(difference, statistic, dof, p_value, difference - half_width, difference + half_width, level, name)


def welch_t_test(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> TTest:
    """Welch's unequal-variance two-sample t-test of mean(a) = mean(b), two-sided.

    t = (mean_a - mean_b) / sqrt(s_a^2/n_a + s_b^2/n_b), with Welch-Satterthwaite degrees of freedom
    (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1)). Needs >= 2 values per side
    (otherwise the p-value is nan).
    """
    a, b = _as_array(a, "a"), _as_array(b, "b")
    difference = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return _t_test(difference, math.nan, math.nan, level, "Welch")
    var_a, var_b = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    stderr = math.sqrt(var_a + var_b)
    denominator = var_a**2 / (a.size - 1) + var_b**2 / (b.size - 1)
    dof = float((var_a + var_b) ** 2 / denominator) if denominator > 0 else math.nan
    return _t_test(difference, stderr, dof, level, "Welch")


def paired_t_test(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> TTest:
    """Paired two-sided t-test on the differences a_i - b_i (a_i and b_i share seed i)."""
    a, b = _as_array(a, "a"), _as_array(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a paired test needs as many values in a as in b; got {a.size} and {b.size}")
    differences = a - b
    if differences.size < 2:
        return _t_test(float(differences.mean()), math.nan, math.nan, level, "paired")
    stderr = float(differences.std(ddof=1) / math.sqrt(differences.size))
    return _t_test(float(differences.mean()), stderr, differences.size - 1, level, "paired")
